/*
 * nn_test_kernel.h - the CNN tests run on the kernel that CXR_KERNEL names (model/kernel.c);
 * ctest registers them once per kernel (model/CMakeLists.txt). A kernel this CPU cannot run is
 * skipped (exit 77, which ctest reports as skipped) with the reason.
 */
#ifndef CXR_NN_TEST_KERNEL_H
#define CXR_NN_TEST_KERNEL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

static void nn_test_kernel_or_skip(void)
{
    const char *want = getenv(NN_KERNEL_ENV), *why = "unknown kernel name";
    char desc[256];
    const int k = nn_kernel_from_name(want);
    if (want && want[0] && strcmp(want, nn_kernel_name()) != 0) {
        if (k >= 0)
            (void)nn_kernel_supported((enum nn_kernel)k, &why);
        printf("skipped: %s=%s: %s\n", NN_KERNEL_ENV, want, why);
        exit(77);
    }
    (void)nn_kernel_describe(desc, sizeof(desc));
    printf("kernel: %s\n", desc);
}

#endif
