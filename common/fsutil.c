/* fsutil.c - durable, bounded file helpers; see fsutil.h. */
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool cxr_is_dir(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

cxr_err cxr_mkdir_p(const char *dir, mode_t mode)
{
    char path[4096];
    size_t len = strlen(dir);

    if (len == 0 || len >= sizeof(path))
        return CXR_EINVAL;
    memcpy(path, dir, len + 1);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, mode) != 0 && errno != EEXIST)
            return CXR_EIO;
        *p = '/';
    }
    if (mkdir(path, mode) != 0 && errno != EEXIST)
        return CXR_EIO;
    return cxr_is_dir(path) ? CXR_OK : CXR_EIO;
}

cxr_err cxr_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    cxr_err err = CXR_OK;

    if (fd < 0)
        return CXR_EIO;
    if (fsync(fd) != 0)
        err = CXR_EIO;
    (void)close(fd);
    return err;
}

static cxr_err write_all(int fd, const void *data, size_t len)
{
    const char *p = data;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return CXR_EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    return CXR_OK;
}

cxr_err cxr_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
    char tmp[4096], dir[4096];
    int fd, n;
    cxr_err err;

    n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return CXR_EINVAL;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return CXR_EIO;
    err = write_all(fd, data, len);
    if (!err && fsync(fd) != 0)
        err = CXR_EIO;
    if (close(fd) != 0 && !err)
        err = CXR_EIO;
    if (!err && rename(tmp, path) != 0)
        err = CXR_EIO;
    if (err) {
        (void)unlink(tmp);
        return err;
    }
    snprintf(dir, sizeof(dir), "%s", path);
    return cxr_fsync_dir(dirname(dir));
}

cxr_err cxr_file_read(const char *path, size_t max, char **ret_data, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    char *data = NULL;
    size_t len = 0, cap = 0;
    cxr_err err = CXR_OK;

    if (!f)
        return errno == ENOENT ? CXR_ENOTFOUND : CXR_EIO;
    for (;;) {
        size_t n;
        if (cap - len < 65536 + 1) {
            size_t ncap = cap ? cap * 2 : 65536 * 2;
            char *p;
            if (ncap > max + 65536 * 2)
                ncap = max + 65536 * 2;
            p = realloc(data, ncap);
            if (!p) {
                err = CXR_ENOMEM;
                break;
            }
            data = p;
            cap = ncap;
        }
        n = fread(data + len, 1, cap - len - 1, f);
        len += n;
        if (len > max) {
            err = CXR_ELIMIT;
            break;
        }
        if (n == 0) {
            if (ferror(f))
                err = CXR_EIO;
            break;
        }
    }
    (void)fclose(f);
    if (err) {
        free(data);
        return err;
    }
    data[len] = '\0';
    *ret_data = data;
    if (ret_len)
        *ret_len = len;
    return CXR_OK;
}

cxr_err cxr_path_join_safe(char *out, size_t outlen, const char *base, const char *name)
{
    int n;

    if (!name[0] || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return CXR_EINVAL;
    n = snprintf(out, outlen, "%s/%s", base, name);
    if (n < 0 || (size_t)n >= outlen)
        return CXR_ELIMIT;
    return CXR_OK;
}
