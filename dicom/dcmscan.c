/*
 * dcmscan.c - a bounds check of a DICOM file's element structure, run before DCMTK parses it.
 *
 * Why: DCMTK allocates an element's value from its length field before it reads the bytes, so a
 * corrupt or hostile length (0xA0000000 in a 4 KB file) becomes a multi-gigabyte allocation.
 * This walker reads only tags and lengths: every defined length must fit in what is left of the
 * file (or of the enclosing item), sequences and items with undefined length must be closed by
 * their delimiters, and nesting is limited, before a single value is allocated. A deflated data
 * set is inflated (bounded by DCM_MAX_FILE_BYTES) into a scratch buffer and walked there. Any
 * failure is reported as CXR_EPARSE with the offset and the tag.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define ZLIB_CONST
#include <zlib.h>

#include "dicom.h"
#include "dicom_int.h"

#define SCAN_MAX_DEPTH 24
#define UNDEF 0xffffffffu

struct scan {
    const unsigned char *p;
    size_t len;
    bool explicit_vr, big_endian;
    bool header_only; /* stop at the top-level Pixel Data (dcm_scan_header) */
    const char *name;
    char *errbuf;
    size_t errlen;
};

static uint16_t rd16(const struct scan *s, size_t pos)
{
    const unsigned char *b = s->p + pos;
    return s->big_endian ? (uint16_t)((b[0] << 8) | b[1]) : (uint16_t)(b[0] | (b[1] << 8));
}

static uint32_t rd32(const struct scan *s, size_t pos)
{
    const unsigned char *b = s->p + pos;
    if (s->big_endian)
        return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
    return ((uint32_t)b[3] << 24) | ((uint32_t)b[2] << 16) | ((uint32_t)b[1] << 8) | b[0];
}

/* Whether an explicit VR element has the 4-byte length form: the standard's long VRs, and (like
 * DCMTK, "assuming 4 byte length field") every VR that is not in the standard. */
static bool is_long_vr(const unsigned char *vr)
{
    static const char *const shorts[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD",
                                         "IS", "LO", "LT", "PN", "SH", "SL", "SS", "ST", "TM",
                                         "UI", "UL", "US"};
    for (size_t i = 0; i < CXR_ARRAY_SIZE(shorts); i++)
        if (vr[0] == (unsigned char)shorts[i][0] && vr[1] == (unsigned char)shorts[i][1])
            return false;
    return true;
}

static bool is_vr(const unsigned char *vr)
{
    return vr[0] >= 'A' && vr[0] <= 'Z' && vr[1] >= 'A' && vr[1] <= 'Z';
}

static bool is_standard_vr(const unsigned char *vr)
{
    static const char *const all[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS",
                                      "LO", "LT", "OB", "OD", "OF", "OL", "OV", "OW", "PN", "SH",
                                      "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN",
                                      "UR", "US", "UT", "UV"};
    for (size_t i = 0; i < CXR_ARRAY_SIZE(all); i++)
        if (vr[0] == (unsigned char)all[i][0] && vr[1] == (unsigned char)all[i][1])
            return true;
    return false;
}

static cxr_err scan_fail(const struct scan *s, size_t pos, uint16_t g, uint16_t e,
                         const char *what)
{
    return px_err(s->errbuf, s->errlen, CXR_EPARSE,
                  "%s: truncated or malformed DICOM file: %s at offset %zu, tag (%04x,%04x)",
                  s->name, what, pos, g, e);
}

static cxr_err scan_elements(const struct scan *s, size_t *pos, size_t end, int depth,
                             bool until_item_end);

/* Items of a sequence (or fragments of encapsulated pixel data) from *pos up to end, or up to
 * the sequence delimiter when undefined. */
static cxr_err scan_items(const struct scan *s, size_t *pos, size_t end, int depth, bool undef,
                          bool opaque)
{
    cxr_err err;

    if (depth > SCAN_MAX_DEPTH)
        return scan_fail(s, *pos, 0, 0, "sequences nested too deeply");
    while (*pos < end) {
        uint16_t g, e;
        uint32_t len;
        if (end - *pos < 8)
            return scan_fail(s, *pos, 0, 0, "data ends inside an item header");
        g = rd16(s, *pos);
        e = rd16(s, *pos + 2);
        len = rd32(s, *pos + 4);
        *pos += 8;
        if (g == 0xfffe && e == 0xe0dd) /* sequence delimiter */
            return undef ? CXR_OK : scan_fail(s, *pos - 8, g, e, "unexpected delimiter");
        if (g != 0xfffe || e != 0xe000)
            return scan_fail(s, *pos - 8, g, e, "expected an item in a sequence");
        if (len == UNDEF) {
            err = scan_elements(s, pos, end, depth + 1, true);
            if (err)
                return err;
        } else {
            size_t item_end;
            if (len > end - *pos)
                return scan_fail(s, *pos - 8, g, e, "item length runs past the end");
            item_end = *pos + len;
            /* Items of a sequence hold a data set; fragments of encapsulated pixel data hold
             * compressed bytes and are not walked. */
            if (!opaque) {
                size_t p = *pos;
                err = scan_elements(s, &p, item_end, depth + 1, false);
                if (err)
                    return err;
            }
            *pos = item_end;
        }
    }
    return undef ? scan_fail(s, *pos, 0, 0, "sequence without its delimiter") : CXR_OK;
}

static cxr_err scan_elements(const struct scan *s, size_t *pos, size_t end, int depth,
                             bool until_item_end)
{
    if (depth > SCAN_MAX_DEPTH)
        return scan_fail(s, *pos, 0, 0, "items nested too deeply");
    while (*pos < end) {
        uint16_t g, e;
        uint32_t len;
        bool sq = false;
        size_t at = *pos;

        if (end - *pos < 8)
            return scan_fail(s, *pos, 0, 0, "data ends inside an element header");
        g = rd16(s, *pos);
        e = rd16(s, *pos + 2);
        if (s->header_only && depth == 0 && g == 0x7fe0 && e == 0x0010)
            return CXR_OK; /* the header ends here; the pixel data is not walked */
        if (g == 0xfffe && e == 0xe00d) { /* item delimiter */
            *pos += 8;
            return until_item_end ? CXR_OK : scan_fail(s, at, g, e, "unexpected delimiter");
        }
        if (g == 0xfffe) {
            len = rd32(s, *pos + 4);
            *pos += 8;
            if (len != UNDEF && len > end - *pos)
                return scan_fail(s, at, g, e, "length runs past the end");
            if (len != UNDEF)
                *pos += len;
            continue;
        }
        if (s->explicit_vr) {
            const unsigned char *vr = s->p + *pos + 4;
            if (!is_vr(vr))
                return scan_fail(s, at, g, e, "not a value representation");
            if (is_long_vr(vr)) {
                if (end - *pos < 12)
                    return scan_fail(s, at, g, e, "data ends inside an element header");
                len = rd32(s, *pos + 8);
                *pos += 12;
            } else {
                len = rd16(s, *pos + 6);
                *pos += 8;
            }
            sq = vr[0] == 'S' && vr[1] == 'Q';
            if (len == UNDEF) {
                cxr_err err;
                if (sq) {
                    err = scan_items(s, pos, end, depth + 1, true, false);
                } else if (g == 0x7fe0 && e == 0x0010 && vr[0] == 'O' &&
                           (vr[1] == 'B' || vr[1] == 'W')) {
                    /* encapsulated pixel data: fragments, not walked */
                    err = scan_items(s, pos, end, depth + 1, true, true);
                } else if ((vr[0] == 'U' && vr[1] == 'N') || !is_standard_vr(vr)) {
                    /* UN (and what DCMTK reads as UN) with undefined length: a sequence
                     * encoded in implicit VR little endian (CP-246), as DCMTK parses it */
                    struct scan imp = *s;
                    imp.explicit_vr = false;
                    imp.big_endian = false;
                    err = scan_items(&imp, pos, end, depth + 1, true, false);
                } else {
                    err = scan_fail(s, at, g, e, "undefined length on a non-sequence element");
                }
                if (err)
                    return err;
                continue;
            }
        } else {
            len = rd32(s, *pos + 4);
            *pos += 8;
            if (len == UNDEF) {
                /* implicit VR: a sequence (DCMTK reads unknown tags of undefined length as
                 * UN sequences); anything else is refused */
                cxr_err err = scan_items(s, pos, end, depth + 1, true, false);
                if (err)
                    return err;
                continue;
            }
        }
        if (len > end - *pos)
            return scan_fail(s, at, g, e, "element length runs past the end of the data");
        if (sq) {
            size_t p = *pos;
            cxr_err err = scan_items(s, &p, *pos + len, depth + 1, false, false);
            if (err)
                return err;
        }
        *pos += len;
    }
    return until_item_end ? scan_fail(s, *pos, 0, 0, "item without its delimiter") : CXR_OK;
}

/* Inflates raw deflate data (no zlib header) into a buffer of at most DCM_MAX_FILE_BYTES. */
static cxr_err inflate_all(const unsigned char *in, size_t inlen, unsigned char **ret,
                           size_t *ret_len)
{
    z_stream z;
    size_t cap = inlen * 4 + 65536, n = 0;
    unsigned char *out = NULL;
    cxr_err err = CXR_OK;
    int rc;

    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK)
        return CXR_ENOMEM;
    z.next_in = in;
    z.avail_in = inlen > UINT32_MAX ? UINT32_MAX : (uInt)inlen;
    for (;;) {
        unsigned char *p;
        if (cap > DCM_MAX_FILE_BYTES)
            cap = DCM_MAX_FILE_BYTES;
        if (n >= cap) {
            err = CXR_ELIMIT;
            break;
        }
        p = realloc(out, cap);
        if (!p) {
            err = CXR_ENOMEM;
            break;
        }
        out = p;
        z.next_out = out + n;
        z.avail_out = (uInt)(cap - n > UINT32_MAX ? UINT32_MAX : cap - n);
        rc = inflate(&z, Z_NO_FLUSH);
        n = (size_t)(z.next_out - out);
        if (rc == Z_STREAM_END || (rc == Z_BUF_ERROR && z.avail_in == 0) ||
            (rc == Z_OK && z.avail_in == 0 && z.avail_out > 0))
            break;
        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            err = CXR_EPARSE;
            break;
        }
        cap *= 2;
    }
    (void)inflateEnd(&z);
    if (err) {
        free(out);
        return err;
    }
    *ret = out;
    *ret_len = n;
    return CXR_OK;
}

static cxr_err scan_file(const void *data, size_t len, bool header_only, const char *name,
                         char *errbuf, size_t errlen)
{
    struct scan s = {.p = data,
                     .len = len,
                     .header_only = header_only,
                     .name = name,
                     .errbuf = errbuf,
                     .errlen = errlen};
    size_t pos = 0;
    char ts[65] = "";
    cxr_err err;

    if (len >= 132 && memcmp(s.p + 128, "DICM", 4) == 0) {
        /* File Meta: explicit VR little endian, group 0002 */
        pos = 132;
        s.explicit_vr = true;
        while (len - pos >= 8 && rd16(&s, pos) == 0x0002) {
            size_t at = pos, vlen;
            uint16_t e = rd16(&s, pos + 2);
            if (!is_vr(s.p + pos + 4))
                return scan_fail(&s, at, 2, e, "not a value representation in the File Meta");
            if (is_long_vr(s.p + pos + 4)) {
                if (len - pos < 12)
                    return scan_fail(&s, at, 2, e, "data ends inside the File Meta");
                vlen = rd32(&s, pos + 8);
                pos += 12;
            } else {
                vlen = rd16(&s, pos + 6);
                pos += 8;
            }
            if (vlen > len - pos)
                return scan_fail(&s, at, 2, e, "File Meta element runs past the end");
            if (e == 0x0010) {
                size_t n = vlen < sizeof(ts) - 1 ? vlen : sizeof(ts) - 1;
                if (vlen > 0 && s.p[pos] == '\0')
                    return scan_fail(&s, at, 2, e, "empty Transfer Syntax UID in the File Meta");
                memcpy(ts, s.p + pos, n);
                while (n > 0 && (ts[n - 1] == '\0' || ts[n - 1] == ' '))
                    n--;
                ts[n] = '\0';
            }
            pos += vlen;
        }
    }
    for (const char *c = ts; *c; c++)
        if ((*c < '0' || *c > '9') && *c != '.')
            return px_err(errbuf, errlen, CXR_EPARSE,
                          "%s: malformed DICOM file: the File Meta's Transfer Syntax UID is not a "
                          "UID",
                          name);
    if (ts[0]) {
        s.explicit_vr = strcmp(ts, "1.2.840.10008.1.2") != 0;
        s.big_endian = strcmp(ts, "1.2.840.10008.1.2.2") == 0;
    } else {
        /* No transfer syntax given: guess like DCMTK, from the first element's bytes. */
        s.explicit_vr = len - pos >= 8 && is_standard_vr(s.p + pos + 4);
        s.big_endian = false;
    }
    if (strcmp(ts, "1.2.840.10008.1.2.1.99") == 0) {
        unsigned char *inf = NULL;
        size_t inflen = 0;
        err = inflate_all(s.p + pos, len - pos, &inf, &inflen);
        if (err)
            return px_err(errbuf, errlen, err == CXR_ELIMIT ? CXR_ELIMIT : CXR_EPARSE,
                          "%s: the deflated data set %s", name,
                          err == CXR_ELIMIT ? "inflates past the size limit" : "is corrupt");
        s.p = inf;
        s.len = inflen;
        pos = 0;
        err = scan_elements(&s, &pos, inflen, 0, false);
        free(inf);
        return err;
    }
    return scan_elements(&s, &pos, len, 0, false);
}

cxr_err dcm_scan_structure(const void *data, size_t len, const char *name, char *errbuf,
                           size_t errlen)
{
    return scan_file(data, len, false, name, errbuf, errlen);
}

cxr_err dcm_scan_header(const void *data, size_t len, const char *name, char *errbuf, size_t errlen)
{
    return scan_file(data, len, true, name, errbuf, errlen);
}
