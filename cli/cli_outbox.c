/*
 * cli_outbox.c - `cxrtriage outbox list|show|retry`: the operator's view of the report outbox
 * (store.h's "report outbox" section).
 *
 * list and show read on a read-only connection, safe while the daemon runs. retry is the one
 * write: it opens the ledger read-write (ST_OPEN_UPDATE: never creates or migrates the file) for
 * a single st_report_requeue, which waits out the daemon's short write transactions (busy
 * timeout) and puts a dead report back to pending with its original idempotency key, control id
 * and report identifier, so a receiver that did get it de-duplicates the resend.
 * The ledger is found as `cxrtriage audit` finds it (cli_util.c). Tables show times in local time
 * (--utc switches); CSV and JSON carry RFC 3339 UTC.
 */
#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_util.h"
#include "common.h"
#include "store.h"

#define PROG "cxrtriage outbox"

struct opts {
    const char *action;
    const char *config, *state_dir, *db;
    struct st_report_filter f;
    bool limit_set;
    enum cli_fmt fmt;
    bool utc, body;
    int64_t id; /* show, retry */
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: cxrtriage outbox ACTION [OPTION]...\n"
            "The reports waiting for delivery, delivered, or dead (given up on).\n\n"
            "Actions:\n"
            "  list        reports, newest first (default --limit 50); read-only\n"
            "  show ID     one report: every field and its delivery attempts; read-only\n"
            "              --body also prints the exact bytes sent (HL7 segments one per line)\n"
            "  retry ID    put a dead report back in the queue, due now, with its original\n"
            "              idempotency key, control id and report id (receivers de-duplicate);\n"
            "              the one write, safe while the daemon runs\n\n"
            "Finding the database (as the daemon does):\n"
            "  --config FILE    the daemon's configuration file\n"
            "  --state-dir DIR  override [daemon] state_dir (the ledger is DIR/audit.db)\n"
            "  --db FILE        the ledger file itself\n\n"
            "Filters (list):\n"
            "  --state pending|delivered|dead   (--dead is short for --state dead)\n"
            "  --study UID  --destination NAME  --limit N (0: all)\n\n"
            "Output:\n"
            "  --format table|csv|json   table (default), RFC 4180 CSV with a header, or one\n"
            "                            JSON object per line\n"
            "  --utc                     table times in UTC instead of local time\n\n"
            "Exit status: 0 success, 1 failure (no database, no such report, not dead), 2 "
            "usage.\n");
}

static bool parse_id(const char *s, int64_t *ret)
{
    char *end;
    long long v;
    if (!isdigit((unsigned char)s[0]))
        return false;
    v = strtoll(s, &end, 10);
    if (*end || v <= 0)
        return false;
    *ret = v;
    return true;
}

/* Returns 0 on success, -1 after --help, else the exit status. */
static int parse_opts(int argc, char **argv, struct opts *o)
{
    enum {
        O_CONFIG = 256,
        O_STATE_DIR,
        O_DB,
        O_STATE,
        O_DEAD,
        O_STUDY,
        O_DESTINATION,
        O_LIMIT,
        O_FORMAT,
        O_UTC,
        O_BODY
    };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, O_CONFIG},
        {"state-dir", required_argument, NULL, O_STATE_DIR},
        {"db", required_argument, NULL, O_DB},
        {"state", required_argument, NULL, O_STATE},
        {"dead", no_argument, NULL, O_DEAD},
        {"study", required_argument, NULL, O_STUDY},
        {"destination", required_argument, NULL, O_DESTINATION},
        {"limit", required_argument, NULL, O_LIMIT},
        {"format", required_argument, NULL, O_FORMAT},
        {"utc", no_argument, NULL, O_UTC},
        {"body", no_argument, NULL, O_BODY},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool takes_id;
    int opt, li = -1;

    memset(o, 0, sizeof(*o));
    o->action = argv[0];
    takes_id = strcmp(o->action, "list") != 0;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":h", longopts, &li)) != -1) {
        bool ok = true;
        switch (opt) {
        case O_CONFIG: o->config = optarg; break;
        case O_STATE_DIR: o->state_dir = optarg; break;
        case O_DB: o->db = optarg; break;
        case O_STATE: o->f.has_state = ok = st_report_state_from_name(optarg, &o->f.state); break;
        case O_DEAD:
            o->f.has_state = true;
            o->f.state = ST_REPORT_DEAD;
            break;
        case O_STUDY: ok = cli_set_text(o->f.study_uid, sizeof(o->f.study_uid), optarg); break;
        case O_DESTINATION:
            ok = cli_set_text(o->f.destination, sizeof(o->f.destination), optarg);
            break;
        case O_LIMIT:
            ok = cli_parse_limit(optarg, &o->f.limit);
            o->limit_set = true;
            break;
        case O_FORMAT: ok = cli_parse_format(optarg, &o->fmt); break;
        case O_UTC: o->utc = true; break;
        case O_BODY: o->body = true; break;
        case 'h': usage(stdout); return -1;
        case ':': return cli_bad_usage(PROG, "option needs a value:", argv[optind - 1]);
        default: return cli_bad_usage(PROG, "unknown option", argv[optind - 1]);
        }
        if (!ok)
            return cli_bad_value(PROG, longopts, li, optarg);
        li = -1;
    }
    if (takes_id) {
        if (optind != argc - 1)
            return cli_bad_usage(PROG, "needs exactly one report ID, got",
                                 argc > optind ? argv[optind] : "");
        if (!parse_id(argv[optind], &o->id))
            return cli_bad_usage(PROG, "not a report ID:", argv[optind]);
    } else if (optind < argc) {
        return cli_bad_usage(PROG, "unexpected argument", argv[optind]);
    }
    if (takes_id && o->fmt == CLI_FMT_CSV)
        return cli_bad_usage(PROG, "--format for show and retry is table or json, not", "csv");
    if (!o->limit_set)
        o->f.limit = 50;
    return 0;
}

/* ---- list ---- */

#define NCOLS 10

struct list_ctx {
    const struct opts *o;
    struct cli_list l;
};

static const char *const csv_header[] = {
    "id",           "created_at",   "study_instance_uid", "destination",     "format",
    "content_type", "state",        "attempts",           "idempotency_key", "control_id",
    "report_id",    "model_digest", "is_correction",      "corrects",        "next_attempt_at",
    "delivered_at", "last_status",  "last_detail"};

static void utc_or_empty(int64_t ms, char *out, size_t len)
{
    if (ms > 0)
        st_format_time(ms, out, len);
    else if (len)
        out[0] = '\0';
}

static void csv_row(const struct st_report *r)
{
    char id[24], attempts[16], corrects[24] = "", status[16], created[40], next[40], done[40];

    (void)snprintf(id, sizeof(id), "%" PRId64, r->id);
    (void)snprintf(attempts, sizeof(attempts), "%d", r->attempts);
    if (r->corrects > 0)
        (void)snprintf(corrects, sizeof(corrects), "%" PRId64, r->corrects);
    (void)snprintf(status, sizeof(status), "%d", r->last_status);
    utc_or_empty(r->created_at_ms, created, sizeof(created));
    utc_or_empty(r->state == ST_REPORT_PENDING ? r->next_attempt_at_ms : 0, next, sizeof(next));
    utc_or_empty(r->delivered_at_ms, done, sizeof(done));
    cli_csv_field(id, false);
    cli_csv_field(created, false);
    cli_csv_field(r->study_uid, false);
    cli_csv_field(r->destination, false);
    cli_csv_field(st_report_format_name(r->format), false);
    cli_csv_field(r->content_type, false);
    cli_csv_field(st_report_state_name(r->state), false);
    cli_csv_field(attempts, false);
    cli_csv_field(r->idempotency_key, false);
    cli_csv_field(r->control_id, false);
    cli_csv_field(r->report_id, false);
    cli_csv_field(r->model_digest, false);
    cli_csv_field(r->is_correction ? "1" : "0", false);
    cli_csv_field(corrects, false);
    cli_csv_field(next, false);
    cli_csv_field(done, false);
    cli_csv_field(status, false);
    cli_csv_field(r->last_detail, true);
}

static void table_row(struct list_ctx *c, const struct st_report *r)
{
    char id[24], created[40], attempts[16], status[16] = "-", when[48] = "-", study[40];
    char dest[40], fmt[40], note[80];
    const char *row[NCOLS];

    (void)snprintf(id, sizeof(id), "%" PRId64, r->id);
    cli_table_time(r->created_at_ms, c->o->utc, created, sizeof(created));
    (void)snprintf(attempts, sizeof(attempts), "%d", r->attempts);
    if (r->last_status)
        (void)snprintf(status, sizeof(status), "%d", r->last_status);
    if (r->state == ST_REPORT_PENDING)
        cli_table_time(r->next_attempt_at_ms, c->o->utc, when, sizeof(when));
    else if (r->state == ST_REPORT_DELIVERED)
        cli_table_time(r->delivered_at_ms, c->o->utc, when, sizeof(when));
    cli_clip(r->destination, 24, dest, sizeof(dest));
    if (r->corrects > 0)
        (void)snprintf(fmt, sizeof(fmt), "%s (corrects %" PRId64 ")",
                       st_report_format_name(r->format), r->corrects);
    else
        (void)snprintf(fmt, sizeof(fmt), "%s%s", st_report_format_name(r->format),
                       r->is_correction ? " (correction)" : "");
    cli_clip(r->study_uid, 32, study, sizeof(study));
    cli_clip(r->last_detail[0] ? r->last_detail : "-", 60, note, sizeof(note));
    row[0] = id;
    row[1] = created;
    row[2] = st_report_state_name(r->state);
    row[3] = dest;
    row[4] = fmt;
    row[5] = attempts;
    row[6] = status;
    row[7] = when;
    row[8] = study;
    row[9] = note;
    cli_table_add(&c->l.table, row);
}

static bool list_fn(void *user, const struct st_report *r)
{
    struct list_ctx *c = user;
    c->l.n++;
    switch (c->o->fmt) {
    case CLI_FMT_CSV: csv_row(r); break;
    case CLI_FMT_JSON:
        cxr_buf_reset(&c->l.line);
        return cli_list_json(&c->l, st_report_json(r, &c->l.line));
    case CLI_FMT_TABLE: table_row(c, r); break;
    }
    return true;
}

static int do_list(st_db *db, const struct opts *o)
{
    struct list_ctx c = {.o = o};
    char errbuf[1200], created[32], when[48];
    int64_t np = 0, nd = 0, nx = 0;
    int rc = 0;
    cxr_err err;

    cli_list_init(&c.l, o->fmt, NCOLS, 1 << 24, csv_header, CXR_ARRAY_SIZE(csv_header));
    if (o->fmt == CLI_FMT_TABLE) {
        const char *head[NCOLS] = {"ID",     "CREATED",    "STATE",       "DESTINATION",
                                   "FORMAT", "ATTEMPTS",   "LAST STATUS", when,
                                   "STUDY",  "LAST DETAIL"};
        (void)snprintf(created, sizeof(created), "CREATED (%s)", o->utc ? "UTC" : "local");
        (void)snprintf(when, sizeof(when), "NEXT TRY / DELIVERED (%s)", o->utc ? "UTC" : "local");
        head[1] = created;
        cli_table_add(&c.l.table, head);
    }
    err = st_report_list(db, &o->f, list_fn, &c, errbuf, sizeof(errbuf));
    if (!err && o->fmt == CLI_FMT_TABLE)
        err = st_outbox_counts(db, &np, &nd, &nx, errbuf, sizeof(errbuf));
    if (err) {
        fprintf(stderr, PROG ": %s\n", errbuf);
        rc = 1;
    } else if (cli_list_failed(&c.l, PROG, "list")) {
        rc = 1;
    } else if (o->fmt == CLI_FMT_TABLE) {
        cli_table_print_rows(&c.l.table, c.l.n, o->f.limit);
        printf("outbox: %" PRId64 " pending, %" PRId64 " delivered, %" PRId64 " dead\n", np, nd,
               nx);
    }
    cli_list_done(&c.l);
    return cli_flush(PROG, rc);
}

/* ---- show ---- */

static bool show_attempt(void *user, const struct st_report_attempt *a)
{
    char when[40];
    st_format_time(a->at_ms, when, sizeof(when));
    printf("  %6" PRId64 "  %s  %-9s  %3d  %8.1f ms  ", a->id, when,
           st_attempt_outcome_name(a->outcome), a->status, a->ms);
    cli_put_safe(a->detail);
    putchar('\n');
    if (a->response[0]) {
        printf("          response: ");
        cli_put_safe(a->response);
        putchar('\n');
    }
    (void)user;
    return true;
}

/* The attempts as the elements of a JSON array appended to b. */
struct attempts_json {
    struct cxr_buf *b;
    cxr_err err;
    int n;
};

static bool attempt_json(void *user, const struct st_report_attempt *a)
{
    struct attempts_json *j = user;
    j->err = j->n++ ? cxr_buf_puts(j->b, ",") : CXR_OK;
    if (!j->err)
        j->err = st_report_attempt_json(a, j->b);
    return !j->err;
}

static int show_json(st_db *db, const struct st_report *r)
{
    struct cxr_buf b;
    struct attempts_json j = {.b = &b};
    char errbuf[1200];
    cxr_err err;

    cxr_buf_init(&b, (size_t)1 << 28); /* a body up to the sender's 64 MiB, escaped */
    err = st_report_json(r, &b);
    if (!err) { /* the report's object, with its attempts as a last key */
        b.data[--b.len] = '\0';
        err = cxr_buf_puts(&b, ",\"delivery_attempts\":[");
    }
    if (!err) {
        err = st_report_attempts(db, r->id, attempt_json, &j, errbuf, sizeof(errbuf));
        if (err) {
            fprintf(stderr, PROG ": %s\n", errbuf);
            cxr_buf_done(&b);
            return 1;
        }
        err = j.err;
    }
    if (!err)
        err = cxr_buf_puts(&b, "]}");
    if (err) {
        fprintf(stderr, PROG ": show: %s\n", cxr_strerror(err));
        cxr_buf_done(&b);
        return 1;
    }
    puts(cxr_buf_str(&b));
    cxr_buf_done(&b);
    return 0;
}

/* The body for a terminal: HL7's CR segment ends as new lines, other control bytes as '?'. */
static void print_body(const struct st_report *r)
{
    printf("body (%zu bytes, %s):\n", r->body_len, r->content_type);
    for (size_t i = 0; i < r->body_len; i++) {
        unsigned char ch = (unsigned char)r->body[i];
        if (ch == '\r') {
            if (i + 1 == r->body_len || r->body[i + 1] != '\n')
                putchar('\n');
        } else {
            putchar(iscntrl(ch) && ch != '\n' && ch != '\t' ? '?' : ch);
        }
    }
    if (r->body_len && r->body[r->body_len - 1] != '\r' && r->body[r->body_len - 1] != '\n')
        putchar('\n');
}

static void print_report(const struct st_report *r, bool utc)
{
    char when[40], local[40], n[32];

    printf("report %" PRId64 "\n", r->id);
    cli_field("study_instance_uid", r->study_uid);
    cli_field("destination", r->destination);
    cli_field("format", st_report_format_name(r->format));
    cli_field("content_type", r->content_type);
    cli_field("state", st_report_state_name(r->state));
    (void)snprintf(n, sizeof(n), "%d", r->attempts);
    cli_field("attempts", n);
    cli_field("idempotency_key", r->idempotency_key);
    cli_field("control_id", r->control_id[0] ? r->control_id : "-");
    cli_field("report_id", r->report_id[0] ? r->report_id : "-");
    cli_field("model_digest", r->model_digest);
    if (r->corrects > 0) {
        (void)snprintf(n, sizeof(n), "report %" PRId64, r->corrects);
        cli_field("corrects", n);
    } else {
        cli_field("correction", r->is_correction ? "yes" : "no");
    }
    st_format_time(r->created_at_ms, when, sizeof(when));
    cli_table_time(r->created_at_ms, utc, local, sizeof(local));
    printf("  %-20s %s (%s %s)\n", "created_at", when, local, utc ? "UTC" : "local");
    if (r->state == ST_REPORT_PENDING) {
        st_format_time(r->next_attempt_at_ms, when, sizeof(when));
        cli_field("next_attempt_at", when);
    }
    if (r->delivered_at_ms > 0) {
        st_format_time(r->delivered_at_ms, when, sizeof(when));
        cli_field("delivered_at", when);
    }
    (void)snprintf(n, sizeof(n), "%d", r->last_status);
    cli_field("last_status", r->last_status ? n : "-");
    cli_field("last_detail", r->last_detail);
    cli_field("last_response", r->last_response);
}

static int do_show(st_db *db, const struct opts *o)
{
    struct st_report *r = calloc(1, sizeof(*r));
    char errbuf[1200];
    int rc = 0;
    cxr_err err;

    if (!r) {
        fprintf(stderr, PROG ": out of memory\n");
        return 1;
    }
    err = st_report_get(db, o->id, o->body, r, errbuf, sizeof(errbuf));
    if (err) {
        fprintf(stderr, PROG ": %s\n", errbuf);
        free(r);
        return 1;
    }
    if (o->fmt == CLI_FMT_JSON) {
        rc = show_json(db, r);
    } else {
        print_report(r, o->utc);
        printf("attempts (UTC):\n");
        err = st_report_attempts(db, r->id, show_attempt, NULL, errbuf, sizeof(errbuf));
        if (err) {
            fprintf(stderr, PROG ": %s\n", errbuf);
            rc = 1;
        } else if (o->body) {
            print_body(r);
        }
    }
    st_report_done(r);
    free(r);
    return cli_flush(PROG, rc);
}

/* ---- retry ---- */

static int do_retry(st_db *db, const struct opts *o)
{
    struct st_report *r = calloc(1, sizeof(*r));
    char errbuf[1200];
    int rc = 0;
    cxr_err err;

    if (!r) {
        fprintf(stderr, PROG ": out of memory\n");
        return 1;
    }
    err = st_report_requeue(db, o->id, st_now_ms(), errbuf, sizeof(errbuf));
    if (err == CXR_EINVAL) {
        fprintf(stderr,
                PROG ": %s: only a dead report can be retried (a pending one is still "
                     "being tried, a delivered one arrived)\n",
                errbuf);
        free(r);
        return 1;
    }
    if (!err)
        err = st_report_get(db, o->id, false, r, errbuf, sizeof(errbuf));
    if (err) {
        fprintf(stderr, PROG ": %s\n", errbuf);
        free(r);
        return 1;
    }
    if (o->fmt == CLI_FMT_JSON) {
        struct cxr_buf b;
        cxr_buf_init(&b, 1 << 20);
        err = st_report_json(r, &b);
        if (!err)
            puts(cxr_buf_str(&b));
        else
            rc = 1;
        cxr_buf_done(&b);
    } else {
        printf("report %" PRId64 " requeued: pending, due now; destination ", r->id);
        cli_put_safe(r->destination);
        printf(", format %s, %d earlier attempt(s) kept\n", st_report_format_name(r->format),
               r->attempts);
        printf("  same idempotency key ");
        cli_put_safe(r->idempotency_key);
        if (r->control_id[0]) {
            printf(", control id ");
            cli_put_safe(r->control_id);
        }
        if (r->report_id[0]) {
            printf(", report id ");
            cli_put_safe(r->report_id);
        }
        printf(" (a receiver that has it already can de-duplicate)\n");
    }
    free(r);
    return cli_flush(PROG, rc);
}

int cli_outbox(int argc, char **argv)
{
    static const struct {
        const char *name;
        int mode;
        int (*run)(st_db *db, const struct opts *o);
    } actions[] = {{"list", ST_OPEN_READ, do_list},
                   {"show", ST_OPEN_READ, do_show},
                   {"retry", ST_OPEN_UPDATE, do_retry}};
    struct opts o;
    st_db *db = NULL;
    int rc;

    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (cli_is_help(argv[1])) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < CXR_ARRAY_SIZE(actions); i++) {
        if (strcmp(argv[1], actions[i].name) != 0)
            continue;
        rc = parse_opts(argc - 1, argv + 1, &o);
        if (rc)
            return rc < 0 ? 0 : rc;
        rc = cli_open_ledger(PROG, o.config, o.state_dir, o.db, actions[i].mode, &db);
        if (rc)
            return rc;
        rc = actions[i].run(db, &o);
        st_close(db);
        return rc;
    }
    fprintf(stderr, PROG ": unknown action '%s' (list, show, retry)\n", argv[1]);
    return 2;
}
