/*
 * cli_util.h - what the ledger's subcommands (cli_audit.c, cli_outbox.c) share: finding and
 * opening the ledger as the daemon finds it, and the output helpers (aligned tables, RFC 4180
 * CSV fields, terminal-safe text).
 */
#ifndef CXR_CLI_UTIL_H
#define CXR_CLI_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <getopt.h>

#include "buf.h"
#include "store.h"

/* Output formats of the listing actions (--format table|csv|json). */
enum cli_fmt { CLI_FMT_TABLE, CLI_FMT_CSV, CLI_FMT_JSON };

/* --format's value: "table", "csv" or "json"; false for anything else. */
bool cli_parse_format(const char *s, enum cli_fmt *ret);
/* --limit's value: a decimal 0..100000000 and nothing else; false otherwise (ret unchanged). */
bool cli_parse_limit(const char *s, int *ret);
/* True for the words that ask a subcommand for its usage: -h, --help, help. */
bool cli_is_help(const char *arg);
/* "PROG: WHAT 'ARG'" and the hint to run PROG --help, on stderr; returns the usage status 2. */
int cli_bad_usage(const char *prog, const char *what, const char *arg);
/* cli_bad_usage for an option (longopts[li], "?" when li < 0) whose value arg is not valid. */
int cli_bad_value(const char *prog, const struct option *longopts, int li, const char *arg);

/* Copies value into dst when it fits (with its NUL); false when it does not. */
bool cli_set_text(char *dst, size_t len, const char *value);

/* Opens the ledger: db when given, else the daemon's audit_db from config (a file, may be NULL)
 * and state_dir (overrides [daemon] state_dir, may be NULL). mode is ST_OPEN_READ, or
 * ST_OPEN_UPDATE for one short write beside the daemon. Errors go to stderr prefixed with prog
 * ("cxrtriage audit"). Returns 0, or the exit status (1). */
int cli_open_ledger(const char *prog, const char *config, const char *state_dir, const char *db,
                    int mode, st_db **ret);

/* CLOCK_MONOTONIC in milliseconds, for durations. */
double cli_mono_ms(void);
/* ms as "YYYY-MM-DD HH:MM:SS" in UTC or local time ("?" when it cannot be shown). */
void cli_table_time(int64_t ms, bool utc, char *out, size_t len);
/* Copies s into out, cut to max characters with "..." when longer; control bytes as '?'. */
void cli_clip(const char *s, size_t max, char *out, size_t len);
/* Writes s to stdout with control bytes (escape sequences) shown as '?'. */
void cli_put_safe(const char *s);
/* "  label                value\n" with the value made safe. */
void cli_field(const char *label, const char *value);
/* One RFC 4180 field to stdout, then ',' or (last) CRLF. */
void cli_csv_field(const char *s, bool last);
/* A CSV header line: the n names as fields. */
void cli_csv_row(const char *const *names, size_t n);
/* Flushes stdout; returns rc, or 1 (with "PROG: writing the output failed") when that fails. */
int cli_flush(const char *prog, int rc);

/* A table whose rows are collected first, so every column is as wide as its widest cell. The
 * first column (ids) is right-aligned. */
struct cli_table {
    size_t ncols;
    char **cells; /* rows * ncols strings */
    size_t rows, cap;
    bool oom; /* a row could not be stored: the caller reports it */
};
void cli_table_init(struct cli_table *t, size_t ncols);
void cli_table_add(struct cli_table *t, const char *const *row); /* ncols cells, copied */
void cli_table_print(const struct cli_table *t);
/* cli_table_print, then "(N rows)", or the hint when n rows reached limit (> 0). */
void cli_table_print_rows(const struct cli_table *t, int64_t n, int limit);
void cli_table_done(struct cli_table *t);

/* What a listing action keeps while the store calls it back row by row: the table (for --format
 * table), the JSON line being built, the rows seen, and the first error of a callback. */
struct cli_list {
    struct cli_table table;
    struct cxr_buf line;
    int64_t n;
    cxr_err err;
};
/* Starts a listing of ncols table columns and JSON lines of up to line_max bytes; for CSV,
 * prints the header csv[0..ncsv). */
void cli_list_init(struct cli_list *l, enum cli_fmt fmt, size_t ncols, size_t line_max,
                   const char *const *csv, size_t ncsv);
/* Prints the JSON line a callback built in l->line when err is CXR_OK, else keeps err; returns
 * false (stop the listing) on error. */
bool cli_list_json(struct cli_list *l, cxr_err err);
/* True, after "PROG: ACTION: error" on stderr, when a callback failed or the table ran out of
 * memory. */
bool cli_list_failed(const struct cli_list *l, const char *prog, const char *action);
void cli_list_done(struct cli_list *l);

#endif
