/*
 * buf.h - a bounded, growable byte buffer (after curl's dynbuf).
 *
 * Every buffer has a hard maximum set at init. On any failure (allocation, or growing past the
 * maximum) the buffer frees its memory and returns CXR_ENOMEM or CXR_ELIMIT, so a caller cannot
 * keep using a half-built value by mistake. The content is always NUL-terminated.
 */
#ifndef CXR_BUF_H
#define CXR_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cxr_buf {
    char *data;    /* NUL-terminated content, NULL while empty */
    size_t len;    /* bytes used, without the NUL */
    size_t cap;    /* bytes allocated */
    size_t max;    /* hard limit on len */
};

void cxr_buf_init(struct cxr_buf *b, size_t max);
void cxr_buf_done(struct cxr_buf *b);
void cxr_buf_reset(struct cxr_buf *b); /* len = 0, keeps the memory */
cxr_err cxr_buf_append(struct cxr_buf *b, const void *data, size_t len);
cxr_err cxr_buf_puts(struct cxr_buf *b, const char *s);
cxr_err cxr_buf_printf(struct cxr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
cxr_err cxr_buf_vprintf(struct cxr_buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* Hands the content over to the caller (free() it) and leaves b empty; never NULL on CXR_OK. */
cxr_err cxr_buf_take(struct cxr_buf *b, char **ret);
static inline const char *cxr_buf_str(const struct cxr_buf *b)
{
    return b->data ? b->data : "";
}

/* Copies src (NULL = "") into dst of size len >= 1, truncating, always terminated; returns
 * true when nothing was cut. For fixed-size struct fields filled from bounded sources. */
bool cxr_strlcpy(char *dst, size_t len, const char *src);

#ifdef __cplusplus
}
#endif
#endif
