/* buf.c - bounded growable buffer; see buf.h for the failure contract. */
#include "buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cxr_buf_init(struct cxr_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void cxr_buf_done(struct cxr_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void cxr_buf_reset(struct cxr_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static cxr_err buf_grow(struct cxr_buf *b, size_t add)
{
    size_t need, cap;
    char *p;

    if (add > b->max || b->len > b->max - add) {
        cxr_buf_done(b);
        return CXR_ELIMIT;
    }
    need = b->len + add + 1;
    if (need <= b->cap)
        return CXR_OK;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    p = realloc(b->data, cap);
    if (!p) {
        cxr_buf_done(b);
        return CXR_ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return CXR_OK;
}

cxr_err cxr_buf_append(struct cxr_buf *b, const void *data, size_t len)
{
    cxr_err err = buf_grow(b, len);

    if (err)
        return err;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return CXR_OK;
}

cxr_err cxr_buf_puts(struct cxr_buf *b, const char *s)
{
    return cxr_buf_append(b, s, strlen(s));
}

cxr_err cxr_buf_vprintf(struct cxr_buf *b, const char *fmt, va_list ap)
{
    va_list copy;
    int n;
    cxr_err err;

    va_copy(copy, ap);
    n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (n < 0) {
        cxr_buf_done(b);
        return CXR_EINVAL;
    }
    err = buf_grow(b, (size_t)n);
    if (err)
        return err;
    (void)vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return CXR_OK;
}

cxr_err cxr_buf_printf(struct cxr_buf *b, const char *fmt, ...)
{
    va_list ap;
    cxr_err err;

    va_start(ap, fmt);
    err = cxr_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return err;
}

cxr_err cxr_buf_take(struct cxr_buf *b, char **ret)
{
    if (!b->data) {
        b->data = calloc(1, 1);
        if (!b->data)
            return CXR_ENOMEM;
    }
    *ret = b->data;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return CXR_OK;
}

bool cxr_strlcpy(char *dst, size_t len, const char *src)
{
    size_t n;
    bool whole;

    if (len == 0)
        return false;
    if (!src)
        src = "";
    n = strnlen(src, len);
    whole = n < len;
    if (!whole)
        n = len - 1;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
    return whole;
}
