/*
 * cli_util.c - shared by the ledger's subcommands: finding the ledger as the daemon does
 * (--config FILE, --state-dir DIR, or --db FILE) and the table, CSV and safe-text output.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_util.h"
#include "common.h"
#include "config.h"

bool cli_set_text(char *dst, size_t len, const char *value)
{
    size_t n = strlen(value);
    if (n >= len)
        return false;
    memcpy(dst, value, n + 1);
    return true;
}

bool cli_parse_format(const char *s, enum cli_fmt *ret)
{
    static const char *const names[] = {"table", "csv", "json"};
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, names[i])) {
            *ret = (enum cli_fmt)i;
            return true;
        }
    return false;
}

bool cli_parse_limit(const char *s, int *ret)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < 0 || v > 100000000)
        return false;
    *ret = (int)v;
    return true;
}

bool cli_is_help(const char *arg)
{
    return !strcmp(arg, "-h") || !strcmp(arg, "--help") || !strcmp(arg, "help");
}

int cli_bad_usage(const char *prog, const char *what, const char *arg)
{
    fprintf(stderr, "%s: %s '%s'\nRun '%s --help' for the options.\n", prog, what, arg, prog);
    return 2;
}

int cli_bad_value(const char *prog, const struct option *longopts, int li, const char *arg)
{
    char what[64];
    (void)snprintf(what, sizeof(what),
                   "invalid value for --%s:", li >= 0 ? longopts[li].name : "?");
    return cli_bad_usage(prog, what, arg);
}

int cli_open_ledger(const char *prog, const char *config, const char *state_dir, const char *db,
                    int mode, st_db **ret)
{
    char errbuf[1200], path[CFG_PATH_MAX];
    cxr_err err;

    if (db) {
        if (!cli_set_text(path, sizeof(path), db)) {
            fprintf(stderr, "%s: --db path too long\n", prog);
            return 1;
        }
    } else {
        struct cfg_config *cfg = malloc(sizeof(*cfg));
        struct cxr_buf errors;
        bool bad = false;

        if (!cfg) {
            fprintf(stderr, "%s: out of memory\n", prog);
            return 1;
        }
        cfg_defaults(cfg);
        cxr_buf_init(&errors, 1 << 20);
        if (config && cfg_load(cfg, config, &errors) != CXR_OK)
            bad = true;
        if (state_dir &&
            cfg_set(cfg, "daemon", "state_dir", state_dir, "--state-dir", &errors) != CXR_OK)
            bad = true;
        if (!bad && cfg_resolve(cfg) != CXR_OK) {
            (void)cxr_buf_puts(&errors, "a derived path is too long\n");
            bad = true;
        }
        if (bad) {
            fprintf(stderr, "%s: configuration errors:\n%s", prog, cxr_buf_str(&errors));
            cxr_buf_done(&errors);
            free(cfg);
            return 1;
        }
        cxr_buf_done(&errors);
        memcpy(path, cfg->audit_db, sizeof(path));
        free(cfg);
    }
    err = st_open(path, mode, ret, errbuf, sizeof(errbuf));
    if (err) {
        fprintf(stderr, "%s: %s\n", prog, errbuf);
        return 1;
    }
    return 0;
}

void cli_table_time(int64_t ms, bool utc, char *out, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if ((utc ? gmtime_r(&t, &tm) : localtime_r(&t, &tm)) == NULL ||
        strftime(out, len, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        (void)snprintf(out, len, "?");
}

void cli_clip(const char *s, size_t max, char *out, size_t len)
{
    size_t n = 0, sl = strlen(s);
    bool cut = sl > max;
    size_t keep = cut ? (max > 3 ? max - 3 : 0) : sl;
    for (size_t i = 0; i < keep && n + 1 < len; i++)
        out[n++] = iscntrl((unsigned char)s[i]) ? '?' : s[i];
    for (int i = 0; cut && i < 3 && n + 1 < len; i++)
        out[n++] = '.';
    out[n] = '\0';
}

void cli_put_safe(const char *s)
{
    for (const char *p = s; *p; p++)
        putchar(iscntrl((unsigned char)*p) ? '?' : *p);
}

void cli_field(const char *label, const char *value)
{
    printf("  %-20s ", label);
    cli_put_safe(value);
    putchar('\n');
}

void cli_csv_field(const char *s, bool last)
{
    if (strpbrk(s, ",\"\r\n")) {
        putchar('"');
        for (const char *p = s; *p; p++) {
            if (*p == '"')
                putchar('"');
            putchar(*p);
        }
        putchar('"');
    } else {
        fputs(s, stdout);
    }
    fputs(last ? "\r\n" : ",", stdout);
}

void cli_csv_row(const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cli_csv_field(names[i], i + 1 == n);
}

int cli_flush(const char *prog, int rc)
{
    if (fflush(stdout) != 0) {
        fprintf(stderr, "%s: writing the output failed\n", prog);
        return 1;
    }
    return rc;
}

void cli_table_init(struct cli_table *t, size_t ncols)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
}

void cli_table_add(struct cli_table *t, const char *const *row)
{
    if (t->oom)
        return;
    if (t->rows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        char **p = realloc(t->cells, cap * t->ncols * sizeof(*p));
        if (!p) {
            t->oom = true;
            return;
        }
        t->cells = p;
        t->cap = cap;
    }
    for (size_t c = 0; c < t->ncols; c++) {
        t->cells[t->rows * t->ncols + c] = strdup(row[c]);
        if (!t->cells[t->rows * t->ncols + c])
            t->oom = true;
    }
    t->rows++;
}

void cli_table_print(const struct cli_table *t)
{
    size_t *w = calloc(t->ncols ? t->ncols : 1, sizeof(*w));
    if (!w)
        return;
    for (size_t r = 0; r < t->rows; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            const char *s = t->cells[r * t->ncols + c];
            size_t l = s ? strlen(s) : 0;
            if (l > w[c])
                w[c] = l;
        }
    for (size_t r = 0; r < t->rows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *s = t->cells[r * t->ncols + c] ? t->cells[r * t->ncols + c] : "";
            if (c == t->ncols - 1)
                printf("%s\n", s);
            else if (c == 0) /* ids right-aligned */
                printf("%*s  ", (int)w[c], s);
            else
                printf("%-*s  ", (int)w[c], s);
        }
    }
    free(w);
}

void cli_table_done(struct cli_table *t)
{
    for (size_t i = 0; i < t->rows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
    t->rows = t->cap = 0;
}

void cli_table_print_rows(const struct cli_table *t, int64_t n, int limit)
{
    cli_table_print(t);
    if (limit > 0 && n == limit)
        printf("(%" PRId64 " rows shown, the limit; --limit N or 0 for more)\n", n);
    else
        printf("(%" PRId64 " row%s)\n", n, n == 1 ? "" : "s");
}

void cli_list_init(struct cli_list *l, enum cli_fmt fmt, size_t ncols, size_t line_max,
                   const char *const *csv, size_t ncsv)
{
    l->n = 0;
    l->err = CXR_OK;
    cli_table_init(&l->table, ncols);
    cxr_buf_init(&l->line, line_max);
    if (fmt == CLI_FMT_CSV)
        cli_csv_row(csv, ncsv);
}

bool cli_list_json(struct cli_list *l, cxr_err err)
{
    l->err = err;
    if (err)
        return false;
    puts(cxr_buf_str(&l->line));
    return true;
}

bool cli_list_failed(const struct cli_list *l, const char *prog, const char *action)
{
    if (!l->err && !l->table.oom)
        return false;
    fprintf(stderr, "%s: %s: %s\n", prog, action, cxr_strerror(l->err ? l->err : CXR_ENOMEM));
    return true;
}

void cli_list_done(struct cli_list *l)
{
    cli_table_done(&l->table);
    cxr_buf_done(&l->line);
}

double cli_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}
