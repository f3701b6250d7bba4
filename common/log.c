/*
 * log.c - one line per event to stderr (or a test sink).
 *
 * The line is formatted into a local buffer first and written with one fwrite under the stdio
 * lock, so lines from several threads never interleave. Control characters in the formatted
 * text are replaced so that a value from the network cannot forge a second log line.
 */
#include "log.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

int cxr_log_threshold = CXR_LOG_INFO;
static bool log_phi;
static FILE *log_sink;

static const char *const level_names[] = {
    [CXR_LOG_ERR] = "ERR",     [CXR_LOG_WARNING] = "WARNING", [CXR_LOG_NOTICE] = "NOTICE",
    [CXR_LOG_INFO] = "INFO",   [CXR_LOG_DEBUG] = "DEBUG",
};

void cxr_log_setup(int threshold, bool phi, FILE *sink)
{
    cxr_log_threshold = threshold;
    log_phi = phi;
    log_sink = sink;
}

bool cxr_log_phi_enabled(void)
{
    return log_phi;
}

const char *cxr_log_phi(const char *value)
{
    if (!log_phi)
        return "[phi]";
    return value ? value : "";
}

int cxr_log_level_from_name(const char *name)
{
    static const struct {
        const char *name;
        int level;
    } names[] = {
        {"err", CXR_LOG_ERR},   {"error", CXR_LOG_ERR},   {"warning", CXR_LOG_WARNING},
        {"warn", CXR_LOG_WARNING}, {"notice", CXR_LOG_NOTICE}, {"info", CXR_LOG_INFO},
        {"debug", CXR_LOG_DEBUG},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(name, names[i].name) == 0)
            return names[i].level;
    return -1;
}

const char *cxr_log_level_name(int level)
{
    if (level < CXR_LOG_ERR || level > CXR_LOG_DEBUG)
        return "?";
    return level_names[level];
}

static void log_vwrite(int level, const char *event, const char *fmt, va_list ap)
{
    char line[2048];
    size_t n = 0;
    FILE *out = log_sink ? log_sink : stderr;
    int r;

    if (getenv("JOURNAL_STREAM")) {
        r = snprintf(line, sizeof(line), "<%d>%s", level, event);
    } else {
        struct timespec ts;
        struct tm tm;
        char stamp[32];

        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
        r = snprintf(line, sizeof(line), "%s.%03ldZ %s %s", stamp, ts.tv_nsec / 1000000L,
                     cxr_log_level_name(level), event);
    }
    if (r > 0)
        n = (size_t)r < sizeof(line) ? (size_t)r : sizeof(line) - 1;
    if (fmt && fmt[0] && n + 1 < sizeof(line)) {
        line[n++] = ' ';
        r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        if (r > 0)
            n += (size_t)r < sizeof(line) - n ? (size_t)r : sizeof(line) - n - 1;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)line[i] < 0x20)
            line[i] = ' ';
    if (n + 1 >= sizeof(line))
        n = sizeof(line) - 2;
    line[n++] = '\n';
    flockfile(out);
    (void)fwrite(line, 1, n, out);
    (void)fflush(out);
    funlockfile(out);
}

void cxr_log_write(int level, const char *event, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vwrite(level, event, fmt, ap);
    va_end(ap);
}

cxr_err cxr_log_err(cxr_err err, const char *event, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    if (CXR_LOG_ERR <= cxr_log_threshold)
        log_vwrite(CXR_LOG_ERR, event, fmt, ap);
    va_end(ap);
    return err;
}
