/*
 * gate.c - the applicability gate: only frontal chest radiographs are scored (DESIGN.md).
 *
 * Works on the header alone, so `cxrtriage inspect` and the daemon can give a verdict without
 * decoding pixels. The first failed rule is the reason; reasons are short, name the attribute
 * and its value, and never contain patient data.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "dicom.h"

#define SOP_SECONDARY_CAPTURE "1.2.840.10008.5.1.4.1.1.7"

static bool is_secondary_capture(const char *sop)
{
    /* 1.2.840.10008.5.1.4.1.1.7 and its multi-frame variants 1.2.840.10008.5.1.4.1.1.7.N */
    size_t n = strlen(SOP_SECONDARY_CAPTURE);
    return strncmp(sop, SOP_SECONDARY_CAPTURE, n) == 0 && (sop[n] == '\0' || sop[n] == '.');
}

void dcm_gate(const struct dcm_info *in, struct px_verdict *ret)
{
    char *r = ret->reason;
    size_t rl = sizeof(ret->reason);

    ret->applicable = false;
    r[0] = '\0';
    if (!in->has_pixel_data) {
        (void)snprintf(r, rl, "not an image: no Pixel Data (Modality '%s')", in->modality);
        return;
    }
    /* A Secondary Capture counts when it does not claim another modality (a CT screenshot is
     * still a CT). */
    if (strcmp(in->modality, "CR") != 0 && strcmp(in->modality, "DX") != 0 &&
        !(is_secondary_capture(in->sop_class_uid) &&
          (!in->modality[0] || strcmp(in->modality, "OT") == 0))) {
        (void)snprintf(r, rl, "not CR, DX or Secondary Capture (Modality '%s')", in->modality);
        return;
    }
    if (in->body_part[0] && strcasecmp(in->body_part, "CHEST") != 0 &&
        strcasecmp(in->body_part, "THORAX") != 0) {
        (void)snprintf(r, rl, "body part is not chest (BodyPartExamined '%s')", in->body_part);
        return;
    }
    if (in->view_position[0] && strcasecmp(in->view_position, "PA") != 0 &&
        strcasecmp(in->view_position, "AP") != 0) {
        (void)snprintf(r, rl, "not a frontal view (ViewPosition '%s')", in->view_position);
        return;
    }
    if (in->number_of_frames > 1) {
        (void)snprintf(r, rl, "several frames (%d)", in->number_of_frames);
        return;
    }
    if (in->rows < PX_MIN_SIDE || in->columns < PX_MIN_SIDE) {
        (void)snprintf(r, rl, "too small: %dx%d, under %d pixels a side", in->columns, in->rows,
                       PX_MIN_SIDE);
        return;
    }
    if (in->samples_per_pixel != 1 ||
        (strcmp(in->photometric, "MONOCHROME1") != 0 &&
         strcmp(in->photometric, "MONOCHROME2") != 0)) {
        (void)snprintf(r, rl, "colour where grayscale is required (%s, %d samples per pixel)",
                       in->photometric, in->samples_per_pixel);
        return;
    }
    ret->applicable = true;
}
