/*
 * fuzz_fhir.c - libFuzzer target for the FHIR R4 Bundle builder (fhir_build_bundle), with every
 * string field of the report taken from the input (report_input.h).
 *
 * Asserted on every Bundle built (abort() = a finding): jansson parses it (strict UTF-8, no
 * duplicate keys, nothing after the value); it is a transaction Bundle with a Device, the
 * Observations and the DiagnosticReport (only the report when not assessed); the patient id and the
 * accession number, when given, appear verbatim as a string value (so JSON encoding round-trips);
 * no string value is empty (FHIR forbids ""). A failed build leaves the output buffer empty.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common.h"
#include "report_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *msg, size_t len)
{
    fprintf(stderr, "fuzz_fhir: %s\n", what);
    if (msg)
        (void)fwrite(msg, 1, len, stderr);
    (void)fputc('\n', stderr);
    abort();
}

/* Walks v: sets *found when a string value equals want (NULL: nothing wanted); returns false
 * on an empty string value. */
static const char *str_of(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static bool walk(json_t *v, const char *want, bool *found, int depth)
{
    if (depth > 64)
        return false;
    if (json_is_string(v)) {
        if (want && strcmp(json_string_value(v), want) == 0)
            *found = true;
        return json_string_length(v) > 0;
    }
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (!walk(json_array_get(v, i), want, found, depth + 1))
                return false;
    } else if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x)
        {
            if (!walk(x, want, found, depth + 1))
                return false;
        }
    }
    return true;
}

static void check_bundle(const struct fz_report *f, const char *m, size_t len)
{
    json_error_t je;
    json_t *root = json_loadb(m, len, JSON_REJECT_DUPLICATES, &je), *entries;
    const char *wants[2] = {f->r.patient.id, f->r.order.accession};

    if (!root)
        fail(je.text, m, len);
    if (strcmp(str_of(root, "resourceType"), "Bundle") != 0 ||
        strcmp(str_of(root, "type"), "transaction") != 0)
        fail("not a transaction Bundle", m, len);
    entries = json_object_get(root, "entry");
    /* assessed: the Device, an Observation per score, the report; else the report only */
    if (!json_is_array(entries) ||
        json_array_size(entries) < (f->r.assessed ? (size_t)f->r.n_classes + 2 : 1u))
        fail("Bundle.entry: fewer entries than the result needs", m, len);
    for (size_t i = 0; i < 2; i++) {
        bool found = false;
        if (!walk(root, wants[i] && wants[i][0] ? wants[i] : NULL, &found, 0))
            fail("an empty string value (or nesting over 64)", m, len);
        if (wants[i] && wants[i][0] && !found)
            fail(i ? "accession number not in the Bundle" : "patient id not in the Bundle", m, len);
    }
    json_decref(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz_report f = {0};
    struct cxr_buf out;
    char err[256], ident[128];

    if (fz_report_decode(&f, data, size) != 0)
        return 0;
    cxr_buf_init(&out, 1u << 20);
    if (fhir_build_bundle(&f.r, &f.s, 1764680400123, &out, err, sizeof(err)) == CXR_OK)
        check_bundle(&f, out.data, out.len);
    else if (out.len != 0)
        fail("a failed build left output behind", out.data, out.len);
    (void)fhir_report_identifier(&f.r, &f.s, ident, sizeof(ident));
    cxr_buf_done(&out);
    fz_report_done(&f);
    return 0;
}
