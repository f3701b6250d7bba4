/*
 * fuzz_dicom.c - libFuzzer target over the file reader and the pixel path: any bytes, as a
 * DICOM, PNG or JPEG file, through px_load_unit_mem_ex() (format detection, DCMTK parse, every
 * decoder, LUTs, resize) and the DICOM header API. Built with clang + libFuzzer when CXR_FUZZ is
 * on, and with any compiler against replay_main.c as a plain regression test.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dicom.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
    return 0;
}
