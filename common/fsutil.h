/*
 * fsutil.h - file system helpers that keep data safe.
 *
 * cxr_file_write_atomic() writes tmp, fsyncs it, renames it over the target and fsyncs the
 * directory, so a reader sees the old content or the new one, never a torn file. Paths built
 * from untrusted names go through cxr_path_join_safe(), which refuses '/', "..", and empty names.
 */
#ifndef CXR_FSUTIL_H
#define CXR_FSUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Creates dir and its missing parents with mode (existing ones are left as they are). */
cxr_err cxr_mkdir_p(const char *dir, mode_t mode);

/* Atomically replaces path with data (mode applies to a new file). */
cxr_err cxr_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode);

/* Reads a whole file up to max bytes into a malloc'ed, NUL-terminated buffer. */
cxr_err cxr_file_read(const char *path, size_t max, char **ret_data, size_t *ret_len);

/* fsyncs the directory holding path (or path itself when it is a directory). */
cxr_err cxr_fsync_dir(const char *dir);

/* out = base "/" name, refusing names that are empty, contain '/' or are "." / "..". */
cxr_err cxr_path_join_safe(char *out, size_t outlen, const char *base, const char *name);

bool cxr_is_dir(const char *path);

#ifdef __cplusplus
}
#endif
#endif
