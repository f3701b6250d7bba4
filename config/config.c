/*
 * config.c - INI parsing (libinih) and validation against one table of keys.
 *
 * DESIGN: libinih hands us (section, key, value) but no line numbers in Debian's build, and it
 * reads at most 199 bytes of a line. So we feed it through our own reader: the reader counts
 * physical lines, refuses over-long ones, checks section headers and line syntax, and the
 * handler validates each key against `keys`. All errors are collected, none stops the parse.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum cfg_type { T_STR, T_PATH, T_DIR, T_INT, T_PORT, T_BOOL, T_DOUBLE, T_AET, T_AETLIST, T_ENUM,
                T_ENUMLIST, T_URL, T_THRESHOLDS, T_ENUM0 /* an enum that may be empty */ };

#define F_SECRET 1u

struct cfg_key {
    const char *section;
    const char *name;
    enum cfg_type type;
    size_t offset;
    size_t size;       /* for strings: buffer size */
    double min, max;   /* for numbers */
    const char *def;   /* default as text */
    const char *choices; /* for enums: "a|b|c" */
    unsigned flags;
};

#define OFF(f) offsetof(struct cfg_config, f), sizeof(((struct cfg_config *)0)->f)

static const struct cfg_key keys[] = {
    {"daemon", "state_dir", T_DIR, OFF(state_dir), 0, 0, "./var", NULL, 0},
    {"daemon", "workers", T_INT, OFF(workers), 1, 64, "1", NULL, 0},
    {"daemon", "threads_per_worker", T_INT, OFF(threads_per_worker), 0, 64, "0", NULL, 0},
    {"daemon", "stop_timeout", T_INT, OFF(stop_timeout), 1, 3600, "30", NULL, 0},
    {"daemon", "max_queue", T_INT, OFF(max_queue), 1, 1000000, "2000", NULL, 0},
    {"daemon", "min_free_mb", T_INT, OFF(min_free_mb), 0, 1048576, "64", NULL, 0},
    {"dicom", "bind", T_STR, OFF(dicom_bind), 0, 0, "127.0.0.1", NULL, 0},
    {"dicom", "port", T_PORT, OFF(dicom_port), 1, 65535, "11112", NULL, 0},
    {"dicom", "ae_title", T_AET, OFF(ae_title), 0, 0, "CXRTRIAGE", NULL, 0},
    {"dicom", "allowed_calling_aets", T_AETLIST, OFF(allowed_calling_aets), 0, 0, "", NULL, 0},
    {"dicom", "max_associations", T_INT, OFF(max_associations), 1, 256, "8", NULL, 0},
    {"dicom", "max_pdu", T_INT, OFF(max_pdu), 4096, 131072, "65536", NULL, 0},
    {"dicom", "acse_timeout", T_INT, OFF(acse_timeout), 1, 3600, "30", NULL, 0},
    {"dicom", "dimse_timeout", T_INT, OFF(dimse_timeout), 1, 3600, "30", NULL, 0},
    {"dicom", "idle_timeout", T_INT, OFF(idle_timeout), 1, 86400, "60", NULL, 0},
    {"dicom", "max_object_mb", T_INT, OFF(max_object_mb), 1, 1024, "256", NULL, 0},
    {"dicom", "other_sop_classes", T_ENUM, OFF(other_sop_classes), 0, 0, "skip", "skip|refuse", 0},
    {"dicom", "duplicates", T_ENUM, OFF(duplicates), 0, 0, "acknowledge", "acknowledge|rescore", 0},
    {"dicom", "tls", T_ENUM, OFF(tls), 0, 0, "off", "off|on|required", 0},
    {"dicom", "tls_port", T_PORT, OFF(tls_port), 1, 65535, "2762", NULL, 0},
    {"dicom", "tls_cert", T_PATH, OFF(tls_cert), 0, 0, "", NULL, 0},
    {"dicom", "tls_key", T_PATH, OFF(tls_key), 0, 0, "", NULL, F_SECRET},
    {"dicom", "tls_ca", T_PATH, OFF(tls_ca), 0, 0, "", NULL, 0},
    {"dicom", "require_client_cert", T_BOOL, OFF(require_client_cert), 0, 0, "true", NULL, 0},
    {"dicom", "tls_profile", T_ENUM, OFF(tls_profile), 0, 0, "bcp195-nd", "bcp195-nd|bcp195|bcp195-ext", 0},
    {"model", "path", T_PATH, OFF(model_path), 0, 0, "", NULL, 0},
    {"triage", "thresholds", T_THRESHOLDS, OFF(thresholds), 0, 0, "", NULL, 0},
    {"triage", "study_quiet_seconds", T_INT, OFF(study_quiet_seconds), 0, 86400, "10", NULL, 0},
    {"audit", "db", T_STR, OFF(audit_db), 0, 0, "", NULL, 0},
    {"audit", "spool_dir", T_STR, OFF(spool_dir), 0, 0, "", NULL, 0},
    {"audit", "spool_retention_days", T_INT, OFF(spool_retention_days), 0, 3650, "30", NULL, 0},
    {"report", "mode", T_ENUM, OFF(report_mode), 0, 0, "send", "send|shadow", 0},
    {"report", "formats", T_ENUMLIST, OFF(report_formats), 0, 0, "hl7,fhir", "hl7|fhir", 0},
    {"report", "outbox_dir", T_STR, OFF(outbox_dir), 0, 0, "", NULL, 0},
    {"report", "sending_application", T_STR, OFF(sending_application), 0, 0, "CXRTRIAGE", NULL, 0},
    {"report", "sending_facility", T_STR, OFF(sending_facility), 0, 0, "", NULL, 0},
    {"report", "receiving_application", T_STR, OFF(receiving_application), 0, 0, "", NULL, 0},
    {"report", "receiving_facility", T_STR, OFF(receiving_facility), 0, 0, "", NULL, 0},
    {"report", "processing_id", T_ENUM, OFF(processing_id), 0, 0, "P", "P|T|D", 0},
    {"http", "enabled", T_BOOL, OFF(http_enabled), 0, 0, "true", NULL, 0},
    {"http", "bind", T_STR, OFF(http_bind), 0, 0, "127.0.0.1", NULL, 0},
    {"http", "port", T_PORT, OFF(http_port), 1, 65535, "8080", NULL, 0},
    {"http", "tls_cert", T_PATH, OFF(http_tls_cert), 0, 0, "", NULL, 0},
    {"http", "tls_key", T_PATH, OFF(http_tls_key), 0, 0, "", NULL, F_SECRET},
    {"http", "auth", T_ENUM, OFF(http_auth), 0, 0, "none", "none|bearer|basic", 0},
    {"http", "token", T_STR, OFF(http_token), 0, 0, "", NULL, F_SECRET},
    {"http", "token_file", T_PATH, OFF(http_token_file), 0, 0, "", NULL, 0},
    {"http", "user", T_STR, OFF(http_user), 0, 0, "", NULL, 0},
    {"http", "password_file", T_PATH, OFF(http_password_file), 0, 0, "", NULL, 0},
    {"http", "max_body_mb", T_INT, OFF(http_max_body_mb), 1, 1024, "64", NULL, 0},
    {"http", "timeout_s", T_INT, OFF(http_timeout_s), 1, 3600, "30", NULL, 0},
    {"http", "threads", T_INT, OFF(http_threads), 1, 64, "4", NULL, 0},
    {"http", "max_connections", T_INT, OFF(http_max_connections), 1, 4096, "64", NULL, 0},
    {"log", "level", T_ENUM, OFF(log_level), 0, 0, "info", "err|warning|notice|info|debug", 0},
    {"log", "phi", T_BOOL, OFF(log_phi), 0, 0, "false", NULL, 0},
};

#define DOFF(f) offsetof(struct cfg_dest, f), sizeof(((struct cfg_dest *)0)->f)

/* Keys of a destination section; `section` says which kind has the key ("webhook", "mllp" or
 * "*" for both). Applied to a struct cfg_dest. */
static const struct cfg_key dest_keys[] = {
    {"webhook", "url", T_URL, DOFF(url), 0, 0, "", NULL, 0},
    {"webhook", "format", T_ENUM0, DOFF(format), 0, 0, "", "hl7|fhir|both", 0},
    {"webhook", "bearer_token", T_STR, DOFF(bearer_token), 0, 0, "", NULL, F_SECRET},
    {"webhook", "hmac_key", T_STR, DOFF(hmac_key), 0, 0, "", NULL, F_SECRET},
    {"webhook", "ca_file", T_PATH, DOFF(ca_file), 0, 0, "", NULL, 0},
    {"webhook", "client_cert", T_PATH, DOFF(client_cert), 0, 0, "", NULL, 0},
    {"webhook", "client_key", T_PATH, DOFF(client_key), 0, 0, "", NULL, F_SECRET},
    {"mllp", "host", T_STR, DOFF(host), 0, 0, "", NULL, 0},
    {"mllp", "port", T_PORT, DOFF(port), 1, 65535, "2575", NULL, 0},
    {"*", "connect_timeout", T_INT, DOFF(connect_timeout), 1, 600, "5", NULL, 0},
    {"*", "timeout", T_INT, DOFF(timeout), 1, 600, "10", NULL, 0},
    {"*", "retry_initial", T_INT, DOFF(retry_initial), 1, 3600, "5", NULL, 0},
    {"*", "retry_max", T_INT, DOFF(retry_max), 1, 86400, "600", NULL, 0},
    {"*", "max_age", T_INT, DOFF(max_age), 60, 2592000, "86400", NULL, 0},
};

static const char *const sections[] = {"daemon", "dicom", "model", "triage", "audit",
                                       "report", "webhook", "mllp", "http", "log"};

bool cfg_is_valid_ae_title(const char *s)
{
    size_t n = strlen(s);
    bool non_space = false;

    if (n == 0 || n > 16)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch > 0x7e || ch == '\\')
            return false;
        if (ch != ' ')
            non_space = true;
    }
    return non_space;
}

/* One allow-list entry: AET or AET@address (numeric IPv4 or IPv6). */
static bool aet_entry_ok(const char *one)
{
    const char *at = strrchr(one, '@');
    char aet[17];
    unsigned char addr[sizeof(struct in6_addr)];
    size_t n = at ? (size_t)(at - one) : strlen(one);

    if (n == 0 || n >= sizeof(aet))
        return false;
    memcpy(aet, one, n);
    aet[n] = '\0';
    if (!cfg_is_valid_ae_title(aet))
        return false;
    if (!at)
        return true;
    return inet_pton(AF_INET, at + 1, addr) == 1 || inet_pton(AF_INET6, at + 1, addr) == 1;
}

static void span_trim(const char **p, size_t *n)
{
    while (*n && (**p == ' ' || **p == '\t')) {
        (*p)++;
        (*n)--;
    }
    while (*n && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
        (*n)--;
}

bool cfg_parse_thresholds(const char *list, void (*fn)(void *user, const char *name, double value),
                          void *user, char *ret_bad, size_t badlen)
{
    const char *p = list;

    while (*p) {
        const char *comma = strchr(p, ',');
        const char *item = p, *eq;
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        char name[64], num[64], *end;
        size_t nl, vl;
        double d;

        span_trim(&item, &n);
        eq = memchr(item, '=', n);
        if (!eq)
            goto bad;
        nl = (size_t)(eq - item);
        vl = n - nl - 1;
        {
            const char *nm = item, *vv = eq + 1;
            span_trim(&nm, &nl);
            span_trim(&vv, &vl);
            if (nl == 0 || nl >= sizeof(name) || vl == 0 || vl >= sizeof(num))
                goto bad;
            memcpy(name, nm, nl);
            name[nl] = '\0';
            memcpy(num, vv, vl);
            num[vl] = '\0';
        }
        errno = 0;
        d = strtod(num, &end);
        if (errno || end == num || *end || !isfinite(d) || d < 0 || d > 1)
            goto bad;
        if (fn)
            fn(user, name, d);
        if (!comma)
            break;
        p = comma + 1;
        continue;
bad:
        if (ret_bad && badlen) {
            if (n >= badlen)
                n = badlen - 1;
            memcpy(ret_bad, item, n);
            ret_bad[n] = '\0';
        }
        return false;
    }
    return true;
}

bool cfg_aet_allowed(const char *list, const char *calling_aet, const char *peer_address)
{
    const char *p = list, *a = calling_aet;
    size_t alen = strlen(calling_aet);
    bool any = false;

    span_trim(&a, &alen);
    while (*p) {
        const char *comma = strchr(p, ',');
        const char *item = p, *at;
        size_t n = comma ? (size_t)(comma - p) : strlen(p), tn;

        span_trim(&item, &n);
        if (n) {
            any = true;
            at = memchr(item, '@', n);
            tn = at ? (size_t)(at - item) : n;
            if (tn == alen && !memcmp(item, a, alen)) {
                if (!at)
                    return true;
                if (peer_address && strlen(peer_address) == n - tn - 1 &&
                    !memcmp(at + 1, peer_address, n - tn - 1))
                    return true;
            }
        }
        if (!comma)
            break;
        p = comma + 1;
    }
    return !any;
}

static bool choice_ok(const char *choices, const char *v, size_t vlen)
{
    const char *p = choices;

    while (*p) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == vlen && strncmp(p, v, n) == 0)
            return true;
        if (!bar)
            break;
        p = bar + 1;
    }
    return false;
}

static bool parse_long(const char *v, long *ret)
{
    char *end;
    long x;

    errno = 0;
    x = strtol(v, &end, 10);
    if (errno || end == v || *end != '\0')
        return false;
    *ret = x;
    return true;
}

/* Validates v for key k; on success stores it in the struct at base (a struct cfg_config, or a
 * struct cfg_dest for dest_keys). On error writes the "expected" text. */
static bool key_apply(void *base, const struct cfg_key *k, const char *v, char *expected,
                      size_t explen)
{
    char *field = (char *)base + k->offset;
    long l;

    switch (k->type) {
    case T_INT:
    case T_PORT:
        if (!parse_long(v, &l) || l < (long)k->min || l > (long)k->max) {
            snprintf(expected, explen, "%s from %ld to %ld",
                     k->type == T_PORT ? "a TCP port" : "a whole number", (long)k->min,
                     (long)k->max);
            return false;
        }
        *(int *)(void *)field = (int)l;
        return true;
    case T_DOUBLE: {
        char *end;
        double d;
        errno = 0;
        d = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(d) || d < k->min || d > k->max) {
            snprintf(expected, explen, "a number from %g to %g", k->min, k->max);
            return false;
        }
        *(double *)(void *)field = d;
        return true;
    }
    case T_BOOL:
        if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on") || !strcmp(v, "1")) {
            *(bool *)field = true;
            return true;
        }
        if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off") || !strcmp(v, "0")) {
            *(bool *)field = false;
            return true;
        }
        snprintf(expected, explen, "true or false");
        return false;
    case T_AET:
        if (!cfg_is_valid_ae_title(v)) {
            snprintf(expected, explen,
                     "an AE title: 1 to 16 printable ASCII characters, no backslash, not blank");
            return false;
        }
        break;
    case T_AETLIST: {
        const char *p = v;
        while (*p) {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            char one[80];
            while (n && *p == ' ') {
                p++;
                n--;
            }
            while (n && p[n - 1] == ' ')
                n--;
            if (n >= sizeof(one)) {
                snprintf(expected, explen, "a comma-separated list of AE titles (16 characters at most each, "
                                           "optionally @address)");
                return false;
            }
            memcpy(one, p, n);
            one[n] = '\0';
            if (!aet_entry_ok(one)) {
                snprintf(expected, explen,
                         "a comma-separated list of AE titles, each optionally AET@address "
                         "('%s' is not one)", one);
                return false;
            }
            if (!comma)
                break;
            p = comma + 1;
        }
        break;
    }
    case T_ENUM0:
        if (*v && !choice_ok(k->choices, v, strlen(v))) {
            snprintf(expected, explen, "one of %s, or empty", k->choices);
            return false;
        }
        break;
    case T_ENUM:
        if (!choice_ok(k->choices, v, strlen(v))) {
            snprintf(expected, explen, "one of %s", k->choices);
            return false;
        }
        break;
    case T_ENUMLIST: {
        const char *p = v;
        if (!*v) {
            snprintf(expected, explen, "a comma-separated list of %s", k->choices);
            return false;
        }
        while (*p) {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            while (n && *p == ' ') {
                p++;
                n--;
            }
            while (n && p[n - 1] == ' ')
                n--;
            if (!choice_ok(k->choices, p, n)) {
                snprintf(expected, explen, "a comma-separated list of %s", k->choices);
                return false;
            }
            if (!comma)
                break;
            p = comma + 1;
        }
        break;
    }
    case T_THRESHOLDS: {
        char bad[128];
        if (!cfg_parse_thresholds(v, NULL, NULL, bad, sizeof(bad))) {
            snprintf(expected, explen,
                     "a comma-separated list of CLASS=NUMBER with numbers from 0 to 1 ('%s' is not one)",
                     bad);
            return false;
        }
        break;
    }
    case T_URL:
        if (*v && strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0) {
            snprintf(expected, explen, "an http:// or https:// URL, or empty for the local outbox only");
            return false;
        }
        break;
    case T_PATH:
        if (*v && access(v, R_OK) != 0) {
            snprintf(expected, explen, "a readable file (%s)", strerror(errno));
            return false;
        }
        break;
    case T_DIR:
        if (!*v) {
            snprintf(expected, explen, "a directory path");
            return false;
        }
        break;
    case T_STR:
        break;
    }
    if (strlen(v) >= k->size) {
        snprintf(expected, explen, "at most %zu characters", k->size - 1);
        return false;
    }
    memcpy(field, v, strlen(v) + 1);
    return true;
}

static const struct cfg_key *key_find(const char *section, const char *name)
{
    for (size_t i = 0; i < CXR_ARRAY_SIZE(keys); i++)
        if (!strcmp(keys[i].section, section) && !strcmp(keys[i].name, name))
            return &keys[i];
    return NULL;
}

static int dest_section(const char *section, char *ret_name, size_t namelen);

static bool section_known(const char *s)
{
    char name[32];

    if (dest_section(s, name, sizeof(name)))
        return true;
    for (size_t i = 0; i < CXR_ARRAY_SIZE(sections); i++)
        if (!strcmp(sections[i], s))
            return true;
    return false;
}

/* "webhook", "mllp", "webhook NAME" or "mllp NAME" (NAME: 1-31 of [A-Za-z0-9_-]): the kind, and
 * the name into ret_name (may be NULL); 0 for any other section. */
static int dest_section(const char *section, char *ret_name, size_t namelen)
{
    int kind = 0;
    const char *rest = NULL;
    size_t n;

    if (!strncmp(section, "webhook", 7)) {
        kind = CFG_DEST_WEBHOOK;
        rest = section + 7;
    } else if (!strncmp(section, "mllp", 4)) {
        kind = CFG_DEST_MLLP;
        rest = section + 4;
    } else {
        return 0;
    }
    if (!*rest) {
        if (ret_name)
            (void)snprintf(ret_name, namelen, "%s", kind == CFG_DEST_WEBHOOK ? "webhook" : "mllp");
        return kind;
    }
    if (*rest != ' ')
        return 0;
    while (*rest == ' ')
        rest++;
    n = strlen(rest);
    if (n == 0 || n > 31 || n >= namelen)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)rest[i]) && rest[i] != '_' && rest[i] != '-')
            return 0;
    if (!strcmp(rest, "webhook") || !strcmp(rest, "mllp"))
        return 0;
    if (ret_name)
        memcpy(ret_name, rest, n + 1);
    return kind;
}

static const struct cfg_key *dest_key_find(int kind, const char *name)
{
    const char *want = kind == CFG_DEST_WEBHOOK ? "webhook" : "mllp";

    for (size_t i = 0; i < CXR_ARRAY_SIZE(dest_keys); i++)
        if ((!strcmp(dest_keys[i].section, "*") || !strcmp(dest_keys[i].section, want)) &&
            !strcmp(dest_keys[i].name, name))
            return &dest_keys[i];
    return NULL;
}

static void dest_defaults(struct cfg_dest *d, int kind, const char *name)
{
    char expected[256];

    memset(d, 0, sizeof(*d));
    d->kind = kind;
    (void)snprintf(d->name, sizeof(d->name), "%s", name);
    for (size_t i = 0; i < CXR_ARRAY_SIZE(dest_keys); i++) {
        bool ok = key_apply(d, &dest_keys[i], dest_keys[i].def, expected, sizeof(expected));
        (void)ok;
    }
    if (kind == CFG_DEST_MLLP)
        (void)snprintf(d->format, sizeof(d->format), "hl7");
}

/* The destination of a section; named ones are created on first use. Returns its slot number
 * (0 webhook, 1 mllp, 2.. named) or -1 when CFG_MAX_DESTS named ones exist already. */
static int dest_slot(struct cfg_config *c, int kind, const char *name, struct cfg_dest **ret)
{
    if (!strcmp(name, "webhook") && kind == CFG_DEST_WEBHOOK) {
        *ret = &c->webhook;
        return 0;
    }
    if (!strcmp(name, "mllp") && kind == CFG_DEST_MLLP) {
        *ret = &c->mllp;
        return 1;
    }
    for (int i = 0; i < c->n_named; i++)
        if (c->named[i].kind == kind && !strcmp(c->named[i].name, name)) {
            *ret = &c->named[i];
            return 2 + i;
        }
    if (c->n_named >= CFG_MAX_DESTS)
        return -1;
    dest_defaults(&c->named[c->n_named], kind, name);
    *ret = &c->named[c->n_named];
    return 2 + c->n_named++;
}

int cfg_destinations(const struct cfg_config *c, const struct cfg_dest **out, int max)
{
    int n = 0;

    if (c->webhook.url[0] && n < max)
        out[n++] = &c->webhook;
    if (c->mllp.host[0] && n < max)
        out[n++] = &c->mllp;
    for (int i = 0; i < c->n_named && n < max; i++)
        out[n++] = &c->named[i];
    return n;
}

void cfg_defaults(struct cfg_config *c)
{
    char expected[256];

    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < CXR_ARRAY_SIZE(keys); i++) {
        /* Defaults of path keys are empty, so key_apply never touches the file system here. */
        bool ok = key_apply(c, &keys[i], keys[i].def, expected, sizeof(expected));
        (void)ok;
    }
    dest_defaults(&c->webhook, CFG_DEST_WEBHOOK, "webhook");
    dest_defaults(&c->mllp, CFG_DEST_MLLP, "mllp");
}

/* Parse state shared by the reader and the handler. */
struct parse_ctx {
    struct cfg_config *c;
    const char *path;
    FILE *f;
    struct cxr_buf *errors;
    int lineno;
    int nerrors;
    bool section_ok;           /* current section is known: keys in an unknown one are not re-reported */
    char seen[CXR_ARRAY_SIZE(keys)]; /* per key: set in this file */
    char dseen[2 + CFG_MAX_DESTS][CXR_ARRAY_SIZE(dest_keys)]; /* per destination and key */
    int dseen_line[2 + CFG_MAX_DESTS][CXR_ARRAY_SIZE(dest_keys)];
    int dest_line[2 + CFG_MAX_DESTS]; /* where a named destination's header is */
    int header_line;                  /* line of the last section header */
    int seen_line[CXR_ARRAY_SIZE(keys)];
    char *line;
    size_t linecap;
};

static void add_error(struct parse_ctx *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_error(struct parse_ctx *p, const char *fmt, ...)
{
    va_list ap;

    p->nerrors++;
    if (cxr_buf_printf(p->errors, "%s:%d: ", p->path, p->lineno))
        return;
    va_start(ap, fmt);
    (void)cxr_buf_vprintf(p->errors, fmt, ap);
    va_end(ap);
    (void)cxr_buf_puts(p->errors, "\n");
}

static char *trim(char *s)
{
    char *e;

    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        *--e = '\0';
    return s;
}

/*
 * The reader libinih calls for each line. We read a whole physical line, check it, and hand
 * libinih either the line or, when we have already reported it, an empty line.
 */
static char *reader(char *str, int num, void *stream)
{
    struct parse_ctx *p = stream;
    ssize_t n = getline(&p->line, &p->linecap, p->f);
    char *t;

    if (n < 0)
        return NULL;
    p->lineno++;
    str[0] = '\0';
    if ((size_t)n > CFG_LINE_MAX + 1 || (size_t)n >= (size_t)num) {
        add_error(p, "line is %zd bytes long, at most %d are allowed", n, CFG_LINE_MAX);
        return str;
    }
    if (memchr(p->line, '\0', (size_t)n)) {
        add_error(p, "line contains a NUL byte");
        return str;
    }
    t = trim(p->line);
    if (p->lineno == 1 && !strncmp(t, "\xEF\xBB\xBF", 3))
        t += 3;
    if (*t == '\0' || *t == '#' || *t == ';') {
        return str;
    }
    if (*t == '[') {
        char *end = strchr(t, ']');
        char name[64];
        size_t len;
        if (!end || trim(end + 1)[0] != '\0') {
            add_error(p, "malformed section header '%s', expected '[name]'", t);
            p->section_ok = false;
            /* Give libinih a harmless header so later keys are not attributed to the old one. */
            snprintf(str, (size_t)num, "[?]\n");
            return str;
        }
        len = (size_t)(end - t - 1);
        if (len >= sizeof(name))
            len = sizeof(name) - 1;
        memcpy(name, t + 1, len);
        name[len] = '\0';
        p->section_ok = section_known(trim(name));
        p->header_line = p->lineno;
        if (!p->section_ok)
            add_error(p, "unknown section [%s], expected one of [daemon] [dicom] [model] [triage] "
                         "[audit] [report] [webhook] [mllp] [http] [log], or [webhook NAME] / "
                         "[mllp NAME] with NAME of letters, digits, '_' and '-'", trim(name));
    } else if (!strchr(t, '=')) {
        add_error(p, "'%s' is not a 'key = value' line", t);
        return str;
    }
    /* Hand libinih the trimmed line: an indented line would otherwise continue the last key. */
    snprintf(str, (size_t)num, "%s\n", t);
    return str;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    struct parse_ctx *p = user;
    const struct cfg_key *k;
    char expected[256];
    size_t idx;

    if (!p->section_ok)
        return 1; /* already reported at the header */
    if (!section[0]) {
        add_error(p, "key '%s' outside any section, expected a [section] header first", name);
        return 1;
    }
    {
        char dname[32];
        int kind = dest_section(section, dname, sizeof(dname));
        if (kind) {
            struct cfg_dest *d;
            int slot = dest_slot(p->c, kind, dname, &d);
            if (slot < 0) {
                add_error(p, "[%s]: too many destinations, at most %d named ones", section,
                          CFG_MAX_DESTS);
                return 1;
            }
            if (!p->dest_line[slot])
                p->dest_line[slot] = p->header_line;
            k = dest_key_find(kind, name);
            if (!k) {
                add_error(p, "[%s] %s: unknown key", section, name);
                return 1;
            }
            idx = (size_t)(k - dest_keys);
            if (p->dseen[slot][idx]) {
                add_error(p, "[%s] %s: duplicate key, first set on line %d", section, name,
                          p->dseen_line[slot][idx]);
                return 1;
            }
            p->dseen[slot][idx] = 1;
            p->dseen_line[slot][idx] = p->lineno;
            if (!key_apply(d, k, value, expected, sizeof(expected)))
                add_error(p, "[%s] %s: found '%s', expected %s", section, name,
                          (k->flags & F_SECRET) ? "********" : value, expected);
            return 1;
        }
    }
    k = key_find(section, name);
    if (!k) {
        add_error(p, "[%s] %s: unknown key", section, name);
        return 1;
    }
    idx = (size_t)(k - keys);
    if (p->seen[idx]) {
        add_error(p, "[%s] %s: duplicate key, first set on line %d", section, name,
                  p->seen_line[idx]);
        return 1;
    }
    p->seen[idx] = 1;
    p->seen_line[idx] = p->lineno;
    if (!key_apply(p->c, k, value, expected, sizeof(expected)))
        add_error(p, "[%s] %s: found '%s', expected %s", section, name,
                  (k->flags & F_SECRET) ? "********" : value, expected);
    return 1;
}

/* The [dicom] TLS keys together: what tls = on|required needs, reported at the line of the
 * tls key (or of the key at fault). The files themselves are checked for readability by their
 * own keys, and for content by dcm_tls_check() (cxrtriage config check, cxrtriaged --check). */
static void check_tls(struct parse_ctx *p)
{
    const struct cfg_config *c = p->c;
    const struct cfg_key *k = key_find("dicom", "tls");
    int line = k ? p->seen_line[k - keys] : 0;

    if (!strcmp(c->tls, "off"))
        return;
    p->lineno = line;
    if (!c->tls_cert[0])
        add_error(p, "[dicom] tls_cert: missing, tls = %s needs the listener's certificate",
                  c->tls);
    if (!c->tls_key[0])
        add_error(p, "[dicom] tls_key: missing, tls = %s needs the certificate's private key",
                  c->tls);
    if (c->require_client_cert && !c->tls_ca[0])
        add_error(p, "[dicom] tls_ca: missing, require_client_cert = true needs the CA "
                     "certificates that client certificates are verified against (or set "
                     "require_client_cert = false)");
    if (!strcmp(c->tls, "on") && c->tls_port == c->dicom_port)
        add_error(p, "[dicom] tls_port: %d is also the plain port; tls = on listens on both",
                  c->tls_port);
}

cxr_err cfg_load(struct cfg_config *c, const char *path, struct cxr_buf *errors)
{
    struct parse_ctx p;
    int r;

    memset(&p, 0, sizeof(p));
    p.c = c;
    p.path = path;
    p.errors = errors;
    p.section_ok = true;
    if (cxr_is_dir(path)) {
        (void)cxr_buf_printf(errors, "%s: is a directory, expected a config file\n", path);
        return CXR_EIO;
    }
    p.f = fopen(path, "r");
    if (!p.f) {
        int e = errno;
        (void)cxr_buf_printf(errors, "%s: cannot open: %s\n", path, strerror(e));
        return e == ENOENT ? CXR_ENOTFOUND : CXR_EIO;
    }
    r = ini_parse_stream(reader, &p, handler, &p);
    free(p.line);
    if (ferror(p.f)) {
        (void)fclose(p.f);
        (void)cxr_buf_printf(errors, "%s: read error\n", path);
        return CXR_EIO;
    }
    (void)fclose(p.f);
    if (r > 0 && p.nerrors == 0) {
        p.lineno = r;
        add_error(&p, "syntax error");
    }
    check_tls(&p);
    for (int i = 0; i < c->n_named; i++) {
        const struct cfg_dest *d = &c->named[i];
        p.lineno = p.dest_line[2 + i];
        if (d->kind == CFG_DEST_WEBHOOK && !d->url[0])
            add_error(&p, "[webhook %s] url: missing, a named webhook needs its URL", d->name);
        if (d->kind == CFG_DEST_MLLP && !d->host[0])
            add_error(&p, "[mllp %s] host: missing, a named MLLP destination needs its host",
                      d->name);
    }
    if (!p.nerrors) {
        const struct cfg_key *k = key_find("http", "bind");
        char origin[CFG_PATH_MAX + 32];
        int line = k ? p.seen_line[k - keys] : 0;
        (void)snprintf(origin, sizeof(origin), "%s:%d: ", path, line ? line : p.lineno);
        p.nerrors += cfg_check(c, origin, errors);
    }
    return p.nerrors ? CXR_EPARSE : CXR_OK;
}

bool cfg_is_loopback(const char *addr)
{
    struct in_addr a4;
    struct in6_addr a6;

    if (!strcmp(addr, "localhost"))
        return true;
    if (inet_pton(AF_INET, addr, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, addr, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}

int cfg_check(const struct cfg_config *c, const char *origin, struct cxr_buf *errors)
{
    int n = 0;
    bool tls = c->http_tls_cert[0] && c->http_tls_key[0];
    bool auth = strcmp(c->http_auth, "none") != 0;

#define CHECK_ERR(...)                                                                             \
    do {                                                                                           \
        n++;                                                                                       \
        (void)cxr_buf_puts(errors, origin);                                                        \
        (void)cxr_buf_printf(errors, __VA_ARGS__);                                                 \
        (void)cxr_buf_puts(errors, "\n");                                                          \
    } while (0)
    if (!!c->http_tls_cert[0] != !!c->http_tls_key[0])
        CHECK_ERR("[http] %s: missing, TLS needs both tls_cert and tls_key",
                  c->http_tls_cert[0] ? "tls_key" : "tls_cert");
    if (!strcmp(c->http_auth, "bearer")) {
        if (!c->http_token[0] && !c->http_token_file[0])
            CHECK_ERR("[http] token: missing, auth = bearer needs token or token_file");
        if (c->http_token[0] && c->http_token_file[0])
            CHECK_ERR("[http] token_file: set together with token, expected only one of them");
    }
    if (!strcmp(c->http_auth, "basic") && (!c->http_user[0] || !c->http_password_file[0]))
        CHECK_ERR("[http] %s: missing, auth = basic needs user and password_file",
                  c->http_user[0] ? "password_file" : "user");
    if (c->http_enabled && !cfg_is_loopback(c->http_bind) && (!tls || !auth))
        CHECK_ERR("[http] bind: found '%s', expected a loopback address (127.0.0.1, ::1) unless "
                  "%s%s%s are set: beyond loopback the endpoint needs TLS and authentication",
                  c->http_bind, tls ? "" : "tls_cert and tls_key", !tls && !auth ? " and " : "",
                  auth ? "" : "auth = bearer or basic");
#undef CHECK_ERR
    return n;
}

cxr_err cfg_set(struct cfg_config *c, const char *section, const char *key, const char *value,
                const char *origin, struct cxr_buf *errors)
{
    const struct cfg_key *k = key_find(section, key);
    char expected[256], dname[32];
    int kind = dest_section(section, dname, sizeof(dname));
    void *base = c;

    if (kind) {
        struct cfg_dest *d;
        if (dest_slot(c, kind, dname, &d) < 0) {
            (void)cxr_buf_printf(errors, "%s: too many destinations\n", origin);
            return CXR_ELIMIT;
        }
        k = dest_key_find(kind, key);
        base = d;
    }
    if (!k) {
        (void)cxr_buf_printf(errors, "%s: unknown key [%s] %s\n", origin, section, key);
        return CXR_EINVAL;
    }
    if (!key_apply(base, k, value, expected, sizeof(expected))) {
        (void)cxr_buf_printf(errors, "%s: found '%s', expected %s\n", origin,
                             (k->flags & F_SECRET) ? "********" : value, expected);
        return CXR_EINVAL;
    }
    return CXR_OK;
}

static cxr_err derive(char *field, size_t size, const char *dir, const char *leaf)
{
    int n;

    if (field[0])
        return CXR_OK;
    n = snprintf(field, size, "%s/%s", dir, leaf);
    return (n < 0 || (size_t)n >= size) ? CXR_ELIMIT : CXR_OK;
}

cxr_err cfg_resolve(struct cfg_config *c)
{
    cxr_err err;

    err = derive(c->audit_db, sizeof(c->audit_db), c->state_dir, "audit.db");
    if (!err)
        err = derive(c->spool_dir, sizeof(c->spool_dir), c->state_dir, "spool");
    if (!err)
        err = derive(c->outbox_dir, sizeof(c->outbox_dir), c->state_dir, "reports");
    if (!err && !c->model_path[0]) {
        const char *dirs[] = {CXR_MODEL_SOURCE_DIR, CXR_MODEL_INSTALL_DIR};
        for (size_t i = 0; i < CXR_ARRAY_SIZE(dirs); i++) {
            char p[CFG_PATH_MAX];
            int n = snprintf(p, sizeof(p), "%s/%s", dirs[i], CXR_DEFAULT_MODEL_NAME);
            if (n > 0 && (size_t)n < sizeof(p) && access(p, R_OK) == 0) {
                memcpy(c->model_path, p, (size_t)n + 1);
                break;
            }
        }
    }
    return err;
}

static cxr_err dump_key(const void *base, const struct cfg_key *k, struct cxr_buf *out)
{
    const char *field = (const char *)base + k->offset;

    switch (k->type) {
    case T_INT:
    case T_PORT:
        return cxr_buf_printf(out, "%s = %d\n", k->name, *(const int *)(const void *)field);
    case T_DOUBLE:
        return cxr_buf_printf(out, "%s = %g\n", k->name, *(const double *)(const void *)field);
    case T_BOOL:
        return cxr_buf_printf(out, "%s = %s\n", k->name, *(const bool *)field ? "true" : "false");
    default:
        return cxr_buf_printf(out, "%s = %s\n", k->name,
                              (k->flags & F_SECRET) && field[0] ? "********" : field);
    }
}

static cxr_err dump_dest(const struct cfg_dest *d, bool named, struct cxr_buf *out)
{
    const char *kind = d->kind == CFG_DEST_WEBHOOK ? "webhook" : "mllp";
    cxr_err err = named ? cxr_buf_printf(out, "\n[%s %s]\n", kind, d->name)
                        : cxr_buf_printf(out, "\n[%s]\n", kind);

    for (size_t i = 0; i < CXR_ARRAY_SIZE(dest_keys) && !err; i++)
        if (!strcmp(dest_keys[i].section, "*") || !strcmp(dest_keys[i].section, kind))
            err = dump_key(d, &dest_keys[i], out);
    return err;
}

cxr_err cfg_dump(const struct cfg_config *c, struct cxr_buf *out)
{
    const char *cur = "";
    cxr_err err = CXR_OK;

    for (size_t i = 0; i < CXR_ARRAY_SIZE(keys) && !err; i++) {
        const struct cfg_key *k = &keys[i];

        if (strcmp(cur, k->section) != 0) {
            err = cxr_buf_printf(out, "%s[%s]\n", i ? "\n" : "", k->section);
            cur = k->section;
            if (err)
                break;
        }
        err = dump_key(c, k, out);
    }
    if (!err)
        err = dump_dest(&c->webhook, false, out);
    if (!err)
        err = dump_dest(&c->mllp, false, out);
    for (int i = 0; i < c->n_named && !err; i++)
        err = dump_dest(&c->named[i], true, out);
    return err;
}
