/*
 * fuzz_hl7.c - libFuzzer target for the HL7 v2.5.1 ORU^R01 builder (hl7_build_oru) and the HL7
 * escaping, with every string field of the report taken from the input (report_input.h).
 *
 * Asserted on every message built (abort() = a finding):
 * - the grammar holds: "MSH|^~\&|" first, segments end in CR, every segment starts with one of
 *   the IDs the builder writes followed by '|', no LF and no other control byte anywhere (a CR
 *   inside a value would start a forged segment);
 * - MSH has exactly its 18 fields and MSH-10 is the control id (an unescaped '|' in an
 *   application or facility name would shift them);
 * - PID-3.1, unescaped, is the patient id again (escaping round-trips);
 * - hl7_escape() on the raw input leaves no '|', '^', '~', '&', CR, LF or control byte, and
 *   every '\' it writes opens a complete escape sequence.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "report_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CONTROL_ID "CXR0123456789ABCDEF0"

static void fail(const char *what, const char *msg, size_t len)
{
    fprintf(stderr, "fuzz_hl7: %s\n", what);
    (void)fwrite(msg, 1, len, stderr);
    (void)fputc('\n', stderr);
    abort();
}

/* HL7 unescaping of one component (the escapes hl7_escape writes). Returns 0, -1 when malformed. */
static int unescape(const char *s, size_t len, char *out, size_t outlen)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '\\') {
            const char *end = memchr(s + i + 1, '\\', len - i - 1);
            size_t n;
            if (!end)
                return -1;
            n = (size_t)(end - (s + i + 1));
            if (n == 1 && strchr("FSRET", s[i + 1])) {
                c = "|^~\\&"[strchr("FSRET", s[i + 1]) - "FSRET"];
            } else if (n == 3 && s[i + 1] == 'X') {
                char hex[3] = {s[i + 2], s[i + 3], 0};
                c = (char)strtol(hex, NULL, 16);
            } else {
                return -1;
            }
            i += n + 1;
        }
        if (o + 1 >= outlen)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

static void check_escape(const uint8_t *data, size_t size)
{
    struct cxr_buf b;
    cxr_buf_init(&b, 16 * size + 64);
    for (unsigned flags = 0; flags <= HL7_ESC_TEXT; flags++) {
        cxr_buf_reset(&b);
        if (hl7_escape(&b, (const char *)data, size, flags) != CXR_OK)
            fail("hl7_escape failed within its bound", "", 0);
        for (size_t i = 0; i < b.len; i++) {
            unsigned char c = (unsigned char)b.data[i];
            if (c < 0x20 || c == 0x7f || strchr("|^~&", c))
                fail("hl7_escape left a separator or control byte", b.data, b.len);
            if (c == '\\') {
                const char *end = memchr(b.data + i + 1, '\\', b.len - i - 1);
                if (!end)
                    fail("hl7_escape wrote an unterminated escape", b.data, b.len);
                i = (size_t)(end - b.data);
            }
        }
    }
    cxr_buf_done(&b);
}

static void check_oru(const struct fz_report *f, const char *m, size_t len)
{
    static const char *const ids[] = {"MSH", "PID", "PV1", "ORC", "OBR", "NTE", "OBX"};
    size_t start = 0, nseg = 0;

    if (len < 9 || memcmp(m, "MSH|^~\\&|", 9) != 0 || m[len - 1] != '\r')
        fail("ORU does not start with MSH|^~\\&| or end with CR", m, len);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)m[i];
        if ((c < 0x20 && c != '\r') || c == 0x7f)
            fail("ORU holds a control byte other than the segment CR", m, len);
    }
    while (start < len) {
        const char *seg = m + start, *cr = memchr(seg, '\r', len - start);
        size_t sl = (size_t)(cr - seg);
        int known = 0;
        for (size_t k = 0; k < sizeof(ids) / sizeof(ids[0]); k++)
            known |= sl >= 4 && memcmp(seg, ids[k], 3) == 0 && seg[3] == '|';
        if (!known)
            fail("ORU segment with an unknown ID (a value broke out of its field)", m, len);
        if (nseg == 0) { /* MSH: 18 fields; MSH-10 at index 9 of the '|' split */
            size_t bars = 0, f10 = 0, f11 = 0;
            for (size_t i = 0; i < sl; i++)
                if (seg[i] == '|') {
                    bars++;
                    if (bars == 9)
                        f10 = i + 1;
                    if (bars == 10)
                        f11 = i;
                }
            if (bars != 17 || f11 - f10 != strlen(CONTROL_ID) ||
                memcmp(seg + f10, CONTROL_ID, f11 - f10) != 0)
                fail("MSH does not have its 18 fields with MSH-10 in place", m, len);
        }
        if (sl >= 4 && memcmp(seg, "PID|", 4) == 0) { /* PID|1||<PID-3.1>^^^... */
            const char *p3 = seg + 7, *caret;
            char back[1024];
            if (sl < 7 || memcmp(seg, "PID|1||", 7) != 0)
                fail("PID does not start with PID|1||", m, len);
            caret = memchr(p3, '^', sl - 7);
            if (!caret || unescape(p3, (size_t)(caret - p3), back, sizeof(back)) != 0 ||
                strcmp(back, f->r.patient.id ? f->r.patient.id : "") != 0)
                fail("PID-3.1 does not unescape to the patient id", m, len);
        }
        nseg++;
        start += sl + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz_report f = {0};
    struct cxr_buf out;
    char err[256], key[64], cid[32];

    check_escape(data, size < 4096 ? size : 4096);
    if (fz_report_decode(&f, data, size) != 0)
        return 0;
    cxr_buf_init(&out, 1u << 20);
    if (hl7_build_oru(&f.r, &f.s, CONTROL_ID, 1764680400123, &out, err, sizeof(err)) == CXR_OK) {
        if (strlen(f.r.patient.id ? f.r.patient.id : "") == 0)
            fail("ORU built without a patient id", out.data, out.len);
        check_oru(&f, out.data, out.len);
    } else if (out.len != 0) {
        fail("a failed build left output behind", out.data, out.len);
    }
    (void)hl7_idempotency_key(&f.r, key, sizeof(key));
    (void)hl7_control_id_suggest(&f.r, 1764680400123, cid, sizeof(cid));
    cxr_buf_done(&out);
    fz_report_done(&f);
    return 0;
}
