/*
 * report_input.h - turns fuzz input into one report (struct rpt_result + rpt_settings) for
 * fuzz_hl7.c and fuzz_fhir.c, so that libFuzzer mutates the field content the daemon takes
 * from DICOM headers, the configuration and the model.
 *
 * Layout: 16 control bytes, then NUL-separated strings assigned to the fields in the order of
 * fz_fields[] below (a missing string is NULL = absent; an empty one is "" = absent too).
 *   byte 0: bit0 assessed, bit1 is_correction, bit2 send_pv1, bit3 clear bit 7 of every string
 *           byte (ASCII content: every string is then valid UTF-8, so the builders go past
 *           the UTF-8 check), bits 4-5 accession_map, bits 6-7 processing id P/T/D/'X'
 *   byte 1: bits 0-2 n_classes - 1, bits 3-4 priority, bits 5-7 n_skipped (0..4, more = 4)
 *   byte 2: triage_class = byte % (n_classes + 1) - 1
 *   bytes 3-10: scores, byte / 255 (byte 3 = 0xFF and byte 4 = 0xFF: score 0 is NaN, a refusal)
 *   bytes 11-12: n_series, n_instances
 *   bytes 13-15: unused (room for later flags)
 * tests/fuzz/mk_seeds.py writes seeds in this layout.
 */
#ifndef CXR_FUZZ_REPORT_INPUT_H
#define CXR_FUZZ_REPORT_INPUT_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hl7.h"

#define FZ_HEADER 16
#define FZ_CLASSES 8
#define FZ_SKIPPED 4

struct fz_report {
    struct rpt_result r;
    struct rpt_settings s;
    const char *names[FZ_CLASSES];
    double scores[FZ_CLASSES];
    struct rpt_skipped skipped[FZ_SKIPPED];
    char *text; /* the strings, one allocation */
};

/* Decodes data into f (free with fz_report_done). Returns 0, or -1 when the input is shorter
 * than the control bytes or memory runs out. */
static inline int fz_report_decode(struct fz_report *f, const uint8_t *data, size_t size)
{
    const char **fields[] = {
        &f->r.study.study_uid,
        &f->r.study.study_date,
        &f->r.study.study_time,
        &f->r.study.tz_offset,
        &f->r.patient.id,
        &f->r.patient.issuer,
        &f->r.patient.name,
        &f->r.patient.birth_date,
        &f->r.patient.sex,
        &f->r.order.accession,
        &f->r.order.placer_order,
        &f->r.order.filler_order,
        &f->r.order.requested_procedure_id,
        &f->r.order.procedure_code,
        &f->r.order.procedure_scheme,
        &f->r.order.procedure_meaning,
        &f->r.triage_reason,
        &f->r.triage_rule,
        &f->r.model_name,
        &f->r.model_version,
        &f->r.model_digest,
        &f->r.previous_control_id,
        &f->r.previous_report_id,
        &f->s.sending_application,
        &f->s.sending_facility,
        &f->s.receiving_application,
        &f->s.receiving_facility,
        &f->s.id_system,
        &f->s.code_system,
        &f->s.patient_id_system,
        &f->names[0],
        &f->names[1],
        &f->names[2],
        &f->names[3],
        &f->names[4],
        &f->names[5],
        &f->names[6],
        &f->names[7],
        &f->skipped[0].sop_uid,
        &f->skipped[0].reason,
        &f->skipped[1].sop_uid,
        &f->skipped[1].reason,
        &f->skipped[2].sop_uid,
        &f->skipped[2].reason,
        &f->skipped[3].sop_uid,
        &f->skipped[3].reason,
    };
    static const char pids[4] = {'P', 'T', 'D', 'X'};
    size_t n = size - FZ_HEADER, nf = 0;
    const uint8_t *h = data;

    memset(f, 0, sizeof(*f));
    if (size < FZ_HEADER)
        return -1;
    f->text = malloc(n + 1);
    if (!f->text)
        return -1;
    memcpy(f->text, data + FZ_HEADER, n);
    f->text[n] = '\0';
    if (h[0] & 8u)
        for (size_t i = 0; i < n; i++)
            f->text[i] = (char)(f->text[i] & 0x7f);
    for (size_t i = 0; i <= n && nf < sizeof(fields) / sizeof(fields[0]);) {
        size_t len = strlen(f->text + i);
        *fields[nf++] = f->text + i;
        i += len + 1;
    }

    {
        struct rpt_settings keep = f->s;
        rpt_settings_init(&f->s);
        /* the strings decoded above win over the defaults */
        f->s.sending_application = keep.sending_application;
        f->s.sending_facility = keep.sending_facility;
        f->s.receiving_application = keep.receiving_application;
        f->s.receiving_facility = keep.receiving_facility;
        if (keep.id_system)
            f->s.id_system = keep.id_system;
        if (keep.code_system)
            f->s.code_system = keep.code_system;
        f->s.patient_id_system = keep.patient_id_system;
    }
    f->r.assessed = (h[0] & 1u) != 0;
    f->r.is_correction = (h[0] & 2u) != 0;
    f->s.send_pv1 = (h[0] & 4u) != 0;
    f->s.accession_map = (h[0] >> 4) & 3u;
    f->s.processing_id = pids[(h[0] >> 6) & 3u];
    f->r.n_classes = 1 + (h[1] & 7);
    f->r.priority = (enum rpt_priority)((h[1] >> 3) & 3);
    f->r.n_skipped = (size_t)(h[1] >> 5) > FZ_SKIPPED ? FZ_SKIPPED : (size_t)(h[1] >> 5);
    f->r.triage_class = (int)(h[2] % (f->r.n_classes + 1)) - 1;
    for (int i = 0; i < FZ_CLASSES; i++)
        f->scores[i] = h[3 + i] / 255.0;
    if (h[3] == 0xff && h[4] == 0xff)
        f->scores[0] = NAN;
    f->r.study.n_series = h[11];
    f->r.study.n_instances = h[12];
    f->r.class_names = f->names;
    f->r.scores = f->scores;
    f->r.skipped = f->r.n_skipped ? f->skipped : NULL;
    f->r.analysis_ms = 1764676800000; /* 2025-12-02 12:00 UTC */
    return 0;
}

static inline void fz_report_done(struct fz_report *f)
{
    free(f->text);
    f->text = NULL;
}

#endif
