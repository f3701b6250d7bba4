/*
 * fuzz_dicom.c - libFuzzer target over the file reader and the pixel path: any bytes, as a
 * DICOM, PNG or JPEG file, through px_load_unit_mem_ex() (format detection, DCMTK parse, every
 * decoder, LUTs, resize) and the DICOM header API; then the same bytes as a file (a memfd,
 * opened by path as the daemon opens a spool file) through dcm_read_report_fields(), the
 * header reader behind the HL7/FHIR reports. Built with clang + libFuzzer when CXR_FUZZ is
 * on, and with any compiler against replay_main.c as a plain regression test.
 *
 * Asserted (abort() = a finding): every report field that dcm_read_report_fields() returns is
 * NUL-terminated inside its array and valid UTF-8 (values it cannot convert become '?'), and
 * warning_text is printable ASCII.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dicom.h"
#include "fz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool utf8_ok(const char *s, size_t cap)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strnlen(s, cap);

    if (n == cap)
        return false; /* not terminated */
    for (size_t i = 0; i < n;) {
        unsigned c = p[i], more, cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            more = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            more = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            more = 3, cp = c & 0x07;
        else
            return false;
        if (i + more >= n)
            return false;
        for (unsigned k = 1; k <= more; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if ((more == 2 && cp < 0x800) || (more == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += more + 1;
    }
    return true;
}

#define FIELD(x)                                                                                   \
    {                                                                                              \
#x, rf.x, sizeof(rf.x)                                                                     \
    }

static void report_fields(const uint8_t *data, size_t size)
{
    static struct dcm_report_fields rf;
    char err[256];

    if (dcm_read_report_fields(fz_as_file(data, size), &rf, err, sizeof(err)) == CXR_OK) {
        const struct {
            const char *name;
            const char *v;
            size_t cap;
        } f[] = {FIELD(sop_class_uid),
                 FIELD(study_uid),
                 FIELD(series_uid),
                 FIELD(sop_instance_uid),
                 FIELD(study_date),
                 FIELD(study_time),
                 FIELD(timezone_offset),
                 FIELD(patient_id),
                 FIELD(issuer_of_patient_id),
                 FIELD(patient_name),
                 FIELD(birth_date),
                 FIELD(sex),
                 FIELD(accession),
                 FIELD(placer_order),
                 FIELD(filler_order),
                 FIELD(requested_procedure_id),
                 FIELD(scheduled_step_id),
                 FIELD(procedure_code),
                 FIELD(procedure_scheme),
                 FIELD(procedure_meaning),
                 FIELD(specific_character_set),
                 FIELD(modality),
                 FIELD(body_part),
                 FIELD(view_position)};
        for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
            if (!utf8_ok(f[i].v, f[i].cap)) {
                fprintf(stderr, "fuzz_dicom: report field %s: not terminated UTF-8\n", f[i].name);
                abort();
            }
        for (size_t i = 0; i < strnlen(rf.warning_text, sizeof(rf.warning_text)); i++)
            if (rf.warning_text[i] < 0x20 || rf.warning_text[i] > 0x7e) {
                fprintf(stderr, "fuzz_dicom: warning_text not printable ASCII\n");
                abort();
            }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static float out[48 * 48];
    char err[256];
    struct px_verdict v;
    struct px_info pi;
    dcm_file *f = NULL;

    (void)px_load_unit_mem_ex(data, size, "fuzz", 48, out, &v, &pi, err, sizeof(err));
    if (dcm_file_open_mem(data, size, "fuzz", &f, err, sizeof(err)) == CXR_OK) {
        struct px_image img = {0};
        dcm_gate(dcm_file_info(f), &v);
        if (dcm_file_decode(f, &img, err, sizeof(err)) == CXR_OK)
            px_image_done(&img);
        dcm_file_free(f);
    }
    report_fields(data, size);
    return 0;
}
