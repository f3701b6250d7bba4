/*
 * cli_audit.c - `cxrtriage audit list|show|export|stats|verify`: the auditor's view of the
 * ledger, read through store.h on a read-only connection (safe while the daemon writes).
 *
 * The database is found exactly as the daemon finds it (--config FILE and --state-dir DIR,
 * then the derived audit_db), or given with --db FILE. Tables show received times in local
 * time (the header says so; --utc switches); CSV and JSON always carry RFC 3339 UTC.
 * Patient IDs are printed: this is the auditor's tool, not a log.
 */
#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_util.h"
#include "common.h"
#include "store.h"

#define PROG "cxrtriage audit"

struct opts {
    const char *action;
    const char *config, *state_dir, *db;
    struct st_filter f;
    bool limit_set;
    enum cli_fmt fmt;
    bool utc;
    const char *arg; /* show: ID or SOP Instance UID */
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: cxrtriage audit ACTION [OPTION]...\n"
            "Reads the audit ledger (read-only; safe while the daemon runs).\n\n"
            "Actions:\n"
            "  list             instances, newest first (default --limit 50)\n"
            "  show ID|SOP_UID  one instance: every field and its event history\n"
            "  export           like list with no default limit (--format csv or json)\n"
            "  stats            counts by state, triage, top class and day\n"
            "  verify           recompute the hash chain and row hashes; exit 1 on any problem\n\n"
            "Finding the database (as the daemon does):\n"
            "  --config FILE    the daemon's configuration file\n"
            "  --state-dir DIR  override [daemon] state_dir (the ledger is DIR/audit.db)\n"
            "  --db FILE        the ledger file itself\n\n"
            "Filters (list, export, stats):\n"
            "  --since T --until T   received in [since, until): 2026-12-02, 2026-12-02T09:30Z,\n"
            "                        or relative: 30m, 24h, 7d (before now)\n"
            "  --patient ID  --accession A  --study UID  --class NAME (top class)\n"
            "  --state received|classified|skipped|failed  --triage urgent|routine|normal|none\n"
            "  --limit N             at most N rows (0: all)\n\n"
            "Output:\n"
            "  --format table|csv|json   table (default), RFC 4180 CSV with a header, or one\n"
            "                            JSON object per line\n"
            "  --utc                     table times in UTC instead of local time\n\n"
            "Exit status: 0 success, 1 failure (no database, not found, verify problems), 2 "
            "usage.\n");
}

/* Returns 0 on success, else the exit status. */
static int parse_opts(int argc, char **argv, struct opts *o)
{
    enum {
        O_CONFIG = 256,
        O_STATE_DIR,
        O_DB,
        O_SINCE,
        O_UNTIL,
        O_PATIENT,
        O_ACCESSION,
        O_STUDY,
        O_CLASS,
        O_STATE,
        O_TRIAGE,
        O_LIMIT,
        O_FORMAT,
        O_UTC
    };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, O_CONFIG},
        {"state-dir", required_argument, NULL, O_STATE_DIR},
        {"db", required_argument, NULL, O_DB},
        {"since", required_argument, NULL, O_SINCE},
        {"until", required_argument, NULL, O_UNTIL},
        {"patient", required_argument, NULL, O_PATIENT},
        {"accession", required_argument, NULL, O_ACCESSION},
        {"study", required_argument, NULL, O_STUDY},
        {"class", required_argument, NULL, O_CLASS},
        {"state", required_argument, NULL, O_STATE},
        {"triage", required_argument, NULL, O_TRIAGE},
        {"limit", required_argument, NULL, O_LIMIT},
        {"format", required_argument, NULL, O_FORMAT},
        {"utc", no_argument, NULL, O_UTC},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int64_t now = st_now_ms();
    int opt, li = -1;

    memset(o, 0, sizeof(*o));
    o->action = argv[0];
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":h", longopts, &li)) != -1) {
        bool ok = true;
        switch (opt) {
        case O_CONFIG: o->config = optarg; break;
        case O_STATE_DIR: o->state_dir = optarg; break;
        case O_DB: o->db = optarg; break;
        case O_SINCE: ok = st_parse_time(optarg, now, &o->f.since_ms); break;
        case O_UNTIL: ok = st_parse_time(optarg, now, &o->f.until_ms); break;
        case O_PATIENT: ok = cli_set_text(o->f.patient_id, sizeof(o->f.patient_id), optarg); break;
        case O_ACCESSION: ok = cli_set_text(o->f.accession, sizeof(o->f.accession), optarg); break;
        case O_STUDY: ok = cli_set_text(o->f.study_uid, sizeof(o->f.study_uid), optarg); break;
        case O_CLASS: ok = cli_set_text(o->f.class_name, sizeof(o->f.class_name), optarg); break;
        case O_STATE: o->f.has_state = ok = st_state_from_name(optarg, &o->f.state); break;
        case O_TRIAGE:
            o->f.has_triage = true;
            if (!strcmp(optarg, "none"))
                o->f.triage = ST_TRIAGE_NONE;
            else
                ok = st_triage_from_name(optarg, &o->f.triage);
            break;
        case O_LIMIT:
            ok = cli_parse_limit(optarg, &o->f.limit);
            o->limit_set = true;
            break;
        case O_FORMAT: ok = cli_parse_format(optarg, &o->fmt); break;
        case O_UTC: o->utc = true; break;
        case 'h': usage(stdout); return -1;
        case ':': return cli_bad_usage(PROG, "option needs a value:", argv[optind - 1]);
        default: return cli_bad_usage(PROG, "unknown option", argv[optind - 1]);
        }
        if (!ok)
            return cli_bad_value(PROG, longopts, li, optarg);
        li = -1;
    }
    if (!strcmp(o->action, "show")) {
        if (optind != argc - 1)
            return cli_bad_usage(PROG, "show needs exactly one ID or SOP Instance UID, got",
                                 argc > optind ? argv[optind] : "");
        o->arg = argv[optind];
    } else if (optind < argc) {
        return cli_bad_usage(PROG, "unexpected argument", argv[optind]);
    }
    if (!o->limit_set && !strcmp(o->action, "list"))
        o->f.limit = 50;
    if (!strcmp(o->action, "export") && o->fmt == CLI_FMT_TABLE)
        o->fmt = CLI_FMT_CSV;
    return 0;
}

/* ---- formatting helpers ---- */

/* Initials of the words of a class name: "Viral Pneumonia" -> "VP", "COVID-19" -> "C". */
static void initials(const char *name, char *out, size_t len)
{
    size_t n = 0;
    bool start = true;
    for (const char *p = name; *p && n + 1 < len; p++) {
        if (isalpha((unsigned char)*p)) {
            if (start)
                out[n++] = (char)toupper((unsigned char)*p);
            start = false;
        } else if (*p == ' ') {
            start = true;
        }
    }
    out[n] = '\0';
}

static int top_class(const struct st_result *res)
{
    int top = -1;
    for (int i = 0; i < res->n_classes && i < ST_MAX_CLASSES; i++)
        if (top < 0 || res->scores[i] > res->scores[top])
            top = i;
    return top;
}

static void compact_scores(const struct st_result *res, char *out, size_t len)
{
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < res->n_classes && i < ST_MAX_CLASSES && n < len; i++) {
        char ini[16];
        int w;
        initials(res->class_names[i], ini, sizeof(ini));
        w = snprintf(out + n, len - n, "%s%s=%.2f", i ? " " : "", ini, res->scores[i]);
        if (w < 0)
            break;
        n += (size_t)w;
    }
}

/* ---- list / export ---- */

#define NCOLS 9

struct list_ctx {
    const struct opts *o;
    struct cli_list l;
};

static const char *const csv_header[] = {
    "id",           "received_at",   "sop_instance_uid", "study_instance_uid",
    "patient_id",   "accession",     "calling_aet",      "peer",
    "state",        "triage",        "top_class",        "top_score",
    "scores",       "triage_reason", "gate_reason",      "error",
    "model_digest", "duplicate_of"};

static void csv_row(const struct st_instance *in)
{
    const struct st_result *res = &in->res;
    char id[24], when[40], score[32] = "", dup[24] = "", scores[600] = "";
    int top = top_class(res);
    size_t n = 0;

    (void)snprintf(id, sizeof(id), "%" PRId64, in->id);
    st_format_time(in->r.received_at_ms, when, sizeof(when));
    if (top >= 0)
        (void)snprintf(score, sizeof(score), "%.6f", res->scores[top]);
    if (in->duplicate_of > 0)
        (void)snprintf(dup, sizeof(dup), "%" PRId64, in->duplicate_of);
    for (int i = 0; i < res->n_classes && i < ST_MAX_CLASSES && n < sizeof(scores); i++) {
        int w = snprintf(scores + n, sizeof(scores) - n, "%s%s=%.6f", i ? ";" : "",
                         res->class_names[i], res->scores[i]);
        if (w < 0)
            break;
        n += (size_t)w;
    }
    cli_csv_field(id, false);
    cli_csv_field(when, false);
    cli_csv_field(in->r.sop_instance_uid, false);
    cli_csv_field(in->r.study_uid, false);
    cli_csv_field(in->r.patient_id, false);
    cli_csv_field(in->r.accession, false);
    cli_csv_field(in->r.calling_aet, false);
    cli_csv_field(in->r.peer, false);
    cli_csv_field(st_state_name(res->state), false);
    cli_csv_field(st_triage_name(res->triage) ? st_triage_name(res->triage) : "", false);
    cli_csv_field(top >= 0 ? res->class_names[top] : "", false);
    cli_csv_field(score, false);
    cli_csv_field(scores, false);
    cli_csv_field(res->triage_reason, false);
    cli_csv_field(res->gate_reason, false);
    cli_csv_field(res->error, false);
    cli_csv_field(res->model_digest, false);
    cli_csv_field(dup, true);
}

static void table_row(struct list_ctx *c, const struct st_instance *in)
{
    const struct st_result *res = &in->res;
    char id[24], when[40], top[96] = "-", scores[200] = "-", acc[24], aet[24], note[64];
    char dup[48] = "";
    const char *row[NCOLS];
    int t = top_class(res);

    (void)snprintf(id, sizeof(id), "%" PRId64, in->id);
    cli_table_time(in->r.received_at_ms, c->o->utc, when, sizeof(when));
    if (t >= 0) {
        (void)snprintf(top, sizeof(top), "%s %.2f", res->class_names[t], res->scores[t]);
        compact_scores(res, scores, sizeof(scores));
    }
    cli_clip(in->r.accession[0] ? in->r.accession : "-", 16, acc, sizeof(acc));
    cli_clip(in->r.calling_aet[0] ? in->r.calling_aet : "-", 16, aet, sizeof(aet));
    if (in->duplicate_of > 0)
        (void)snprintf(dup, sizeof(dup), "duplicate of %" PRId64, in->duplicate_of);
    cli_clip(res->error[0]         ? res->error
             : res->gate_reason[0] ? res->gate_reason
                                   : dup,
             48, note, sizeof(note));
    row[0] = id;
    row[1] = when;
    row[2] = st_state_name(res->state);
    row[3] = st_triage_name(res->triage) ? st_triage_name(res->triage) : "-";
    row[4] = top;
    row[5] = scores;
    row[6] = acc;
    row[7] = aet;
    row[8] = note;
    cli_table_add(&c->l.table, row);
}

static bool list_fn(void *user, const struct st_instance *in)
{
    struct list_ctx *c = user;
    c->l.n++;
    switch (c->o->fmt) {
    case CLI_FMT_CSV: csv_row(in); break;
    case CLI_FMT_JSON:
        cxr_buf_reset(&c->l.line);
        return cli_list_json(&c->l, st_instance_json(in, &c->l.line));
    case CLI_FMT_TABLE: table_row(c, in); break;
    }
    return true;
}

static int do_list(st_db *db, const struct opts *o)
{
    struct list_ctx c = {.o = o};
    char errbuf[1200], recv[32];
    int rc = 0;
    cxr_err err;

    cli_list_init(&c.l, o->fmt, NCOLS, 1 << 20, csv_header, CXR_ARRAY_SIZE(csv_header));
    if (o->fmt == CLI_FMT_TABLE) {
        const char *head[NCOLS] = {"ID",        recv,         "STATE",
                                   "TRIAGE",    "TOP",        "SCORES",
                                   "ACCESSION", "CALLING AE", "NOTE (gate reason, error)"};
        (void)snprintf(recv, sizeof(recv), "RECEIVED (%s)", o->utc ? "UTC" : "local");
        cli_table_add(&c.l.table, head);
    }
    err = st_list(db, &o->f, list_fn, &c, errbuf, sizeof(errbuf));
    if (err) {
        fprintf(stderr, "cxrtriage audit: %s\n", errbuf);
        rc = 1;
    } else if (cli_list_failed(&c.l, PROG, o->action)) {
        rc = 1;
    } else if (o->fmt == CLI_FMT_TABLE) {
        cli_table_print_rows(&c.l.table, c.l.n, o->f.limit);
    }
    cli_list_done(&c.l);
    return cli_flush(PROG, rc);
}

/* ---- show ---- */

static bool show_event(void *user, const struct st_event *e)
{
    char when[40];
    st_format_time(e->at_ms, when, sizeof(when));
    printf("  %6" PRId64 "  %s  ", e->id, when);
    cli_put_safe(e->kind);
    printf("%*s ", (int)(strlen(e->kind) < 16 ? 16 - strlen(e->kind) : 0), "");
    cli_put_safe(e->detail);
    putchar('\n');
    (void)user;
    return true;
}

static int do_show(st_db *db, const struct opts *o)
{
    struct st_instance *in = malloc(sizeof(*in));
    const struct st_receipt *r;
    const struct st_result *res;
    char errbuf[1200], when[40], local[40];
    int64_t id = 0;
    bool numeric;
    cxr_err err;

    if (!o->arg) { /* parse_opts guarantees it for show */
        free(in);
        return 2;
    }
    numeric = o->arg[0] != '\0';
    if (!in) {
        fprintf(stderr, "cxrtriage audit: out of memory\n");
        return 1;
    }
    for (const char *p = o->arg; *p; p++)
        if (!isdigit((unsigned char)*p))
            numeric = false;
    if (numeric)
        id = strtoll(o->arg, NULL, 10);
    err = st_get(db, id, numeric ? NULL : o->arg, in, errbuf, sizeof(errbuf));
    if (err) {
        fprintf(stderr, "cxrtriage audit: %s '%s'\n", errbuf, o->arg);
        free(in);
        return 1;
    }
    r = &in->r;
    res = &in->res;
    if (o->fmt == CLI_FMT_JSON) {
        struct cxr_buf b;
        cxr_buf_init(&b, 1 << 20);
        err = st_instance_json(in, &b);
        if (!err)
            puts(cxr_buf_str(&b));
        cxr_buf_done(&b);
        free(in);
        return err ? 1 : 0;
    }
    st_format_time(r->received_at_ms, when, sizeof(when));
    cli_table_time(r->received_at_ms, o->utc, local, sizeof(local));
    printf("instance %" PRId64 "\n", in->id);
    cli_field("sop_instance_uid", r->sop_instance_uid);
    cli_field("sop_class_uid", r->sop_class_uid);
    cli_field("study_instance_uid", r->study_uid);
    cli_field("series_instance_uid", r->series_uid);
    cli_field("patient_id", r->patient_id);
    cli_field("accession", r->accession);
    printf("  %-20s ", "calling/called AE");
    cli_put_safe(r->calling_aet);
    printf(" -> ");
    cli_put_safe(r->called_aet);
    putchar('\n');
    cli_field("peer", r->peer);
    cli_field("transfer_syntax", r->transfer_syntax);
    cli_field("source", r->source);
    cli_field("spool_path", r->spool_path);
    printf("  %-20s %" PRId64 "\n", "size_bytes", r->size_bytes);
    printf("  %-20s %s (%s %s)\n", "received_at", when, local, o->utc ? "UTC" : "local");
    cli_field("state", st_state_name(res->state));
    cli_field("gate", res->gate_applicable ? "applicable" : res->gate_reason);
    printf("  %-20s", "scores");
    if (res->n_classes == 0)
        printf(" -");
    for (int i = 0; i < res->n_classes && i < ST_MAX_CLASSES; i++)
        printf("%s %s %.4f", i ? "," : "", res->class_names[i], res->scores[i]);
    putchar('\n');
    cli_field("triage", st_triage_name(res->triage) ? st_triage_name(res->triage) : "-");
    cli_field("triage_reason", res->triage_reason);
    cli_field("rule", res->rule);
    cli_field("model_digest", res->model_digest);
    printf("  %-20s %s\n", "pixel_sha256", res->pixel_sha256);
    printf("  %-20s", "timings_ms");
    for (int i = 0; i < ST_T__COUNT; i++)
        if (res->timings_ms[i] >= 0)
            printf(" %s=%.1f", st_stage_name((enum st_stage)i), res->timings_ms[i]);
    putchar('\n');
    cli_field("error", res->error);
    if (in->duplicate_of > 0)
        printf("  %-20s %" PRId64 "\n", "duplicate_of", in->duplicate_of);
    st_format_time(in->updated_at_ms, when, sizeof(when));
    cli_field("updated_at", when);
    printf("events (UTC):\n");
    err = st_events(db, in->id, show_event, NULL, errbuf, sizeof(errbuf));
    free(in);
    if (err) {
        fprintf(stderr, "cxrtriage audit: %s\n", errbuf);
        return 1;
    }
    return 0;
}

/* ---- stats ---- */

#define MAX_KEYS 512
struct counter {
    size_t n;
    char keys[MAX_KEYS][64];
    int64_t counts[MAX_KEYS];
    int64_t other; /* keys beyond MAX_KEYS */
};

static void count(struct counter *c, const char *key)
{
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->keys[i], key)) {
            c->counts[i]++;
            return;
        }
    if (c->n == MAX_KEYS) {
        c->other++;
        return;
    }
    (void)snprintf(c->keys[c->n], sizeof(c->keys[0]), "%s", key);
    c->counts[c->n++] = 1;
}

struct stats {
    bool utc;
    int64_t total;
    struct counter state, triage, top, day;
};

static bool stats_fn(void *user, const struct st_instance *in)
{
    struct stats *s = user;
    char day[40];
    int t = top_class(&in->res);

    s->total++;
    count(&s->state, st_state_name(in->res.state));
    count(&s->triage, st_triage_name(in->res.triage) ? st_triage_name(in->res.triage) : "none");
    count(&s->top, t >= 0 ? in->res.class_names[t] : "none");
    cli_table_time(in->r.received_at_ms, s->utc, day, sizeof(day));
    day[10] = '\0';
    count(&s->day, day);
    return true;
}

static void print_counter_table(const char *title, const struct counter *c)
{
    printf("%s\n", title);
    for (size_t i = 0; i < c->n; i++)
        printf("  %-24s %8" PRId64 "\n", c->keys[i], c->counts[i]);
    if (c->other)
        printf("  %-24s %8" PRId64 "\n", "(other)", c->other);
}

static void print_counter_json(const char *name, const struct counter *c, bool last)
{
    printf("\"%s\":{", name);
    for (size_t i = 0; i < c->n; i++) {
        printf("%s\"", i ? "," : "");
        for (const char *p = c->keys[i]; *p; p++) { /* keys are class names and dates */
            if (*p == '"' || *p == '\\')
                putchar('\\');
            if (!iscntrl((unsigned char)*p))
                putchar(*p);
        }
        printf("\":%" PRId64, c->counts[i]);
    }
    printf("}%s", last ? "" : ",");
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* Days sorted ascending (counts follow their keys). */
static void sort_days(struct counter *c)
{
    struct {
        char key[64];
        int64_t n;
    } *tmp = malloc(sizeof(*tmp) * (c->n ? c->n : 1));
    if (!tmp)
        return;
    for (size_t i = 0; i < c->n; i++) {
        memcpy(tmp[i].key, c->keys[i], sizeof(tmp[i].key));
        tmp[i].n = c->counts[i];
    }
    qsort(tmp, c->n, sizeof(*tmp), cmp_key);
    for (size_t i = 0; i < c->n; i++) {
        memcpy(c->keys[i], tmp[i].key, sizeof(tmp[i].key));
        c->counts[i] = tmp[i].n;
    }
    free(tmp);
}

static int do_stats(st_db *db, const struct opts *o)
{
    struct stats *s = calloc(1, sizeof(*s));
    char errbuf[1200];
    cxr_err err;

    if (!s) {
        fprintf(stderr, "cxrtriage audit: out of memory\n");
        return 1;
    }
    s->utc = o->utc;
    /* fixed order for the closed sets, so that zero counts show too */
    for (int i = 0; i < 4; i++)
        (void)snprintf(s->state.keys[s->state.n++], 64, "%s", st_state_name((enum st_state)i));
    for (int i = 1; i <= 4; i++)
        (void)snprintf(s->triage.keys[s->triage.n++], 64, "%s",
                       i < 4 ? st_triage_name((enum st_triage)i) : "none");
    err = st_list(db, &o->f, stats_fn, s, errbuf, sizeof(errbuf));
    if (err) {
        fprintf(stderr, "cxrtriage audit: %s\n", errbuf);
        free(s);
        return 1;
    }
    sort_days(&s->day);
    if (o->fmt == CLI_FMT_JSON) {
        printf("{\"total\":%" PRId64 ",", s->total);
        print_counter_json("by_state", &s->state, false);
        print_counter_json("by_triage", &s->triage, false);
        print_counter_json("by_top_class", &s->top, false);
        print_counter_json(o->utc ? "by_day_utc" : "by_day_local", &s->day, true);
        printf("}\n");
    } else if (o->fmt == CLI_FMT_CSV) {
        printf("group,key,count\r\n");
        const struct {
            const char *name;
            const struct counter *c;
        } groups[] = {{"state", &s->state},
                      {"triage", &s->triage},
                      {"top_class", &s->top},
                      {o->utc ? "day_utc" : "day_local", &s->day}};
        for (size_t g = 0; g < CXR_ARRAY_SIZE(groups); g++)
            for (size_t i = 0; i < groups[g].c->n; i++) {
                char n[24];
                (void)snprintf(n, sizeof(n), "%" PRId64, groups[g].c->counts[i]);
                cli_csv_field(groups[g].name, false);
                cli_csv_field(groups[g].c->keys[i], false);
                cli_csv_field(n, true);
            }
    } else {
        printf("instances: %" PRId64 "\n", s->total);
        print_counter_table("by state:", &s->state);
        print_counter_table("by triage:", &s->triage);
        print_counter_table("by top class:", &s->top);
        print_counter_table(o->utc ? "by day (UTC):" : "by day (local time):", &s->day);
    }
    free(s);
    return 0;
}

/* ---- verify ---- */

static bool count_event(void *user, const struct st_event *e)
{
    (*(int64_t *)user)++;
    (void)e;
    return true;
}

static int do_verify(st_db *db, const struct opts *o)
{
    struct cxr_buf report;
    char errbuf[1200];
    int64_t problems = 0, by_state[4], by_triage[4], n_inst = 0, n_ev = 0;
    cxr_err err;

    cxr_buf_init(&report, 64u << 20);
    err = st_verify(db, &report, &problems, errbuf, sizeof(errbuf));
    if (!err)
        err = st_counts(db, by_state, by_triage, errbuf, sizeof(errbuf));
    if (!err)
        err = st_events(db, -1, count_event, &n_ev, errbuf, sizeof(errbuf));
    if (err) {
        fprintf(stderr, "cxrtriage audit: %s\n", errbuf);
        cxr_buf_done(&report);
        return 1;
    }
    for (int i = 0; i < 4; i++)
        n_inst += by_state[i];
    fputs(cxr_buf_str(&report), stdout);
    cxr_buf_done(&report);
    if (problems) {
        printf("audit FAILED: %" PRId64 " problem(s); %" PRId64 " instances, %" PRId64 " events\n",
               problems, n_inst, n_ev);
        return 1;
    }
    printf("audit ok: %" PRId64 " instances, %" PRId64 " events, chain intact\n", n_inst, n_ev);
    (void)o;
    return 0;
}

int cli_audit(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*run)(st_db *db, const struct opts *o);
    } actions[] = {{"list", do_list},
                   {"show", do_show},
                   {"export", do_list},
                   {"stats", do_stats},
                   {"verify", do_verify}};
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
        rc = cli_open_ledger(PROG, o.config, o.state_dir, o.db, ST_OPEN_READ, &db);
        if (rc)
            return rc;
        rc = actions[i].run(db, &o);
        st_close(db);
        return rc;
    }
    fprintf(stderr, "cxrtriage audit: unknown action '%s' (list, show, export, stats, verify)\n",
            argv[1]);
    return 2;
}
