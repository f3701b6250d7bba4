/*
 * replay_main.c - runs a libFuzzer target without libFuzzer (systemd's fuzz-main.c): every file
 * named on the command line, and every regular file in every directory named, is passed to
 * LLVMFuzzerTestOneInput() once, after LLVMFuzzerInitialize() when the target has one. Used as a
 * plain regression test under gcc and the sanitizers.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int replay_file(const char *path, size_t *count)
{
    char *data = NULL;
    size_t len = 0;
    cxr_err err = cxr_file_read(path, (size_t)1 << 28, &data, &len);

    if (err) {
        fprintf(stderr, "replay: %s: %s\n", path, cxr_strerror(err));
        return 1;
    }
    (void)LLVMFuzzerTestOneInput((const uint8_t *)data, len);
    free(data);
    (*count)++;
    return 0;
}

static int replay_path(const char *path, size_t *count, int depth)
{
    struct stat st;
    DIR *d;
    struct dirent *e;
    int rc = 0;

    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: %s: cannot stat\n", path);
        return 1;
    }
    if (!S_ISDIR(st.st_mode))
        return S_ISREG(st.st_mode) ? replay_file(path, count) : 0;
    if (depth > 4)
        return 0;
    d = opendir(path);
    if (!d) {
        fprintf(stderr, "replay: %s: cannot open directory\n", path);
        return 1;
    }
    while ((e = readdir(d)) != NULL) {
        char sub[4096];
        if (e->d_name[0] == '.')
            continue;
        if (snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name) >= (int)sizeof(sub))
            continue;
        rc |= replay_path(sub, count, depth + 1);
    }
    (void)closedir(d);
    return rc;
}

int main(int argc, char **argv)
{
    size_t count = 0;
    int rc = 0;

    if (LLVMFuzzerInitialize)
        (void)LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++)
        rc |= replay_path(argv[i], &count, 0);
    printf("replayed %zu inputs\n", count);
    return rc || count == 0 ? 1 : 0;
}
