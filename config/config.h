/*
 * config.h - the daemon's configuration: an INI file (libinih) validated against one table.
 *
 * Every key has a type, bounds and a default (config.c, the table `keys`), and
 * cxrtriage.conf.example documents each one. Loading collects every error, one line each,
 * "FILE:LINE: [section] key: found 'X', expected Y", and never stops at the first, so an
 * operator fixes a file in one pass. The struct is plain data, read-only after loading.
 * config parsing is non-logging: errors are returned to the caller.
 */
#ifndef CXR_CONFIG_H
#define CXR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "common.h"

#define CFG_STR_MAX 256
#define CFG_PATH_MAX 1024
#define CFG_LIST_MAX 1024
#define CFG_LINE_MAX 190 /* libinih reads at most 199 bytes; we refuse longer lines outright */

#define CFG_MAX_DESTS 8
enum cfg_dest_kind { CFG_DEST_WEBHOOK = 1, CFG_DEST_MLLP = 2 };

/* One report destination: the [webhook] or [mllp] section, or a named one ("[webhook ehr2]"). */
struct cfg_dest {
    char name[32];          /* "webhook", "mllp" or the section's NAME */
    int kind;               /* enum cfg_dest_kind */
    char url[CFG_LIST_MAX]; /* webhook: http:// or https:// */
    char format[8];         /* hl7 | fhir | both; "" = [report] formats (webhook); mllp: hl7 */
    char bearer_token[CFG_STR_MAX];
    char hmac_key[CFG_STR_MAX];
    char ca_file[CFG_PATH_MAX];
    char client_cert[CFG_PATH_MAX];
    char client_key[CFG_PATH_MAX];
    char host[CFG_STR_MAX]; /* mllp */
    int port;               /* mllp */
    int connect_timeout, timeout;   /* seconds, per attempt */
    int retry_initial, retry_max;   /* seconds: first delay, doubling up to this */
    int max_age;                    /* seconds after which an undelivered report is dead */
};

struct cfg_config {
    /* [daemon] */
    char state_dir[CFG_PATH_MAX];
    int workers;
    int threads_per_worker;
    int stop_timeout;     /* seconds SIGTERM waits for running associations and inference */
    int max_queue;        /* instances waiting to be scored before new associations are refused */
    int min_free_mb;      /* free space under the spool before new associations are refused */
    /* [dicom] */
    char dicom_bind[CFG_STR_MAX];
    int dicom_port;
    char ae_title[17];
    char allowed_calling_aets[CFG_LIST_MAX];
    int max_associations;
    int max_pdu;
    int acse_timeout;
    int dimse_timeout;
    int idle_timeout;
    int max_object_mb;
    char other_sop_classes[8]; /* skip | refuse */
    char duplicates[12];       /* acknowledge | rescore */
    char tls[10];              /* off | on (plain on port and TLS on tls_port) | required (TLS
                                  on tls_port only) */
    int tls_port;
    char tls_cert[CFG_PATH_MAX];
    char tls_key[CFG_PATH_MAX];
    char tls_ca[CFG_PATH_MAX];
    bool require_client_cert;  /* clients must present a certificate that tls_ca verifies */
    char tls_profile[12];      /* bcp195-nd | bcp195 | bcp195-ext */
    /* [model] */
    char model_path[CFG_PATH_MAX];
    /* [triage] */
    char thresholds[CFG_LIST_MAX]; /* "Class=0.5, Other=0.3"; empty = the model's operating points */
    int study_quiet_seconds;
    /* [audit] */
    char audit_db[CFG_PATH_MAX];
    char spool_dir[CFG_PATH_MAX];
    int spool_retention_days;
    /* [report] */
    char report_mode[8]; /* send | shadow */
    char report_formats[CFG_STR_MAX];
    char outbox_dir[CFG_PATH_MAX];
    char sending_application[CFG_STR_MAX];
    char sending_facility[CFG_STR_MAX];
    char receiving_application[CFG_STR_MAX];
    char receiving_facility[CFG_STR_MAX];
    char processing_id[2];
    /* [webhook], [mllp] and named destinations [webhook NAME] / [mllp NAME] */
    struct cfg_dest webhook;
    struct cfg_dest mllp;
    struct cfg_dest named[CFG_MAX_DESTS];
    int n_named;
    /* [http] */
    bool http_enabled;
    char http_bind[CFG_STR_MAX];
    int http_port;
    char http_tls_cert[CFG_PATH_MAX];
    char http_tls_key[CFG_PATH_MAX];
    char http_auth[8];               /* none | bearer | basic */
    char http_token[CFG_STR_MAX];
    char http_token_file[CFG_PATH_MAX];
    char http_user[CFG_STR_MAX];
    char http_password_file[CFG_PATH_MAX];
    int http_max_body_mb;
    int http_timeout_s;
    int http_threads;
    int http_max_connections;
    /* [log] */
    char log_level[16];
    bool log_phi;
};

/* Fills c with the built-in defaults (the daemon runs on these with no file at all). */
void cfg_defaults(struct cfg_config *c);

/*
 * Reads path over the values already in c. Every problem is appended to errors as one line
 * ending in '\n'. Returns CXR_OK, CXR_ENOTFOUND/CXR_EIO (file unreadable) or CXR_EPARSE
 * (one or more errors in the file).
 */
cxr_err cfg_load(struct cfg_config *c, const char *path, struct cxr_buf *errors);

/*
 * Sets one key from a command-line override; origin names it in messages ("--port").
 * Same checks as in a file; on error appends one line to errors.
 */
cxr_err cfg_set(struct cfg_config *c, const char *section, const char *key, const char *value,
                const char *origin, struct cxr_buf *errors);

/* True when addr is a loopback address or name (127.0.0.0/8, ::1, localhost). */
bool cfg_is_loopback(const char *addr);

/* Checks between keys (e.g. [http] beyond loopback needs TLS and auth). Appends one line per
 * problem naming the key, prefixed by origin ("FILE:LINE: " or "--option: "); returns the count.
 * cfg_load runs it on every file. */
int cfg_check(const struct cfg_config *c, const char *origin, struct cxr_buf *errors);

/* Fills derived defaults: audit_db, spool_dir, outbox_dir under state_dir when empty. */
cxr_err cfg_resolve(struct cfg_config *c);

/* The destinations reports go to: [webhook] when its url is set, [mllp] when its host is set,
 * then every named one, in file order. Returns how many were written to out (at most max). */
int cfg_destinations(const struct cfg_config *c, const struct cfg_dest **out, int max);

/* Appends the effective configuration as INI text; secrets print as "********". */
cxr_err cfg_dump(const struct cfg_config *c, struct cxr_buf *out);

/* Parses a triage threshold list "Class=0.5, Other Class=0.25" (names as the model spells
 * them, values 0..1). Calls fn for each pair in order; returns false (with *ret_bad pointing at
 * the offending item) on a syntax error. fn may be NULL to validate only. */
bool cfg_parse_thresholds(const char *list, void (*fn)(void *user, const char *name, double value),
                          void *user, char *ret_bad, size_t badlen);

/* True when the calling AE title (with the peer's numeric address) is allowed by the list
 * "AET, AET@address, ..." (empty list: everyone). Titles compare exactly after trimming
 * DICOM's trailing spaces. */
bool cfg_aet_allowed(const char *list, const char *calling_aet, const char *peer_address);

/* DICOM AE title rule: 1-16 characters of the default repertoire, no backslash or control
 * characters, not only spaces. */
bool cfg_is_valid_ae_title(const char *s);

#endif
