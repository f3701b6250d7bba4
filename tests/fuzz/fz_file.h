/*
 * fz_file.h - the fuzz input as a file that a path opens, for code that reads files by name
 * (cfg_load, dcm_read_report_fields): one memfd per process, rewritten for every input, and its
 * /proc/self/fd/N path. No disk I/O, nothing to clean up.
 */
#ifndef CXR_FUZZ_FZ_FILE_H
#define CXR_FUZZ_FZ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Writes data to the memfd and returns its path (static storage). Aborts when the kernel
 * refuses (that is the harness failing, not the code under test). */
static inline const char *fz_as_file(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];

    if (fd < 0) {
        fd = memfd_create("fuzz_input", MFD_CLOEXEC);
        if (fd < 0)
            abort();
        (void)snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size))
        abort();
    return path;
}

#endif
