/*
 * fuzz_model.c - libFuzzer target for the .cxrm model loader (model/file.c).
 *
 * The checksum is skipped so that mutations reach the section parsers; a file that loads is
 * also given an inference context and scored once (when it is small), so shapes the loader
 * accepts must be safe to run. Built with -DCXR_FUZZ=ON under clang; otherwise main() below
 * replays the files and directories given as arguments and then runs a deterministic sweep
 * (every truncation and a bit flip at every byte of a small valid model), as a plain test.
 */
#include <dirent.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "nn_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    nn_model *m = NULL;
    char err[256];
    if (nn_model_load_mem_flags(data, size, NN_LOAD_SKIP_CHECKSUM, &m, err, sizeof(err)) ==
        CXR_OK) {
        nn_ctx *ctx = NULL;
        if (nn_model_flops(m) < 2e7 && nn_ctx_new(m, 1, &ctx) == CXR_OK) {
            size_t n = nn_model_input_len(m);
            float *x = calloc(n, sizeof(float)), probs[NN_MAX_CLASSES];
            if (x && nn_predict(ctx, x, 1, probs) != CXR_OK)
                abort();
            free(x);
        }
        nn_ctx_free(ctx);
        nn_model_free(m);
    }
    return 0;
}

#ifndef CXR_LIBFUZZER
static int replay_file(const char *path)
{
    char *data = NULL;
    size_t len = 0;
    if (cxr_file_read(path, 64u << 20, &data, &len) != CXR_OK) {
        fprintf(stderr, "fuzz_model: cannot read '%s'\n", path);
        return 1;
    }
    (void)LLVMFuzzerTestOneInput((const uint8_t *)data, len);
    free(data);
    return 0;
}

static int replay(const char *path, int *count)
{
    DIR *d = opendir(path);
    struct dirent *e;
    int rc = 0;
    if (!d) {
        (*count)++;
        return replay_file(path);
    }
    while ((e = readdir(d)) != NULL) {
        char full[4096];
        if (e->d_name[0] == '.')
            continue;
        (void)snprintf(full, sizeof(full), "%s/%s", path, e->d_name);
        rc |= replay_file(full);
        (*count)++;
    }
    closedir(d);
    return rc;
}

static int sweep(void)
{
    static const char *const names[] = {"a", "b", "c"};
    static const char arch[] = "input 10 1\nconv 3 3 1 1\nbn\nrelu\nmaxpool 2 2\n"
                               "conv 4 1 1 0\nrelu\navgpool 2 1\ngap\ndropout 0.2\ndense classes\n";
    char path[] = "/tmp/fuzz_model_XXXXXX", err[256];
    nn_model *m = NULL;
    uint8_t *good = NULL, *buf;
    size_t len = 0;
    int fd = mkstemp(path), n = 0;
    if (fd < 0)
        return 1;
    if (write(fd, arch, sizeof(arch) - 1) != (ssize_t)(sizeof(arch) - 1)) {
        (void)close(fd);
        return 1;
    }
    (void)close(fd);
    if (nn_model_build(path, NULL, 3, names, 5, &m, err, sizeof(err)) != CXR_OK ||
        nn_model_serialize(m, &good, &len, err, sizeof(err)) != CXR_OK) {
        fprintf(stderr, "fuzz_model: %s\n", err);
        (void)remove(path);
        nn_model_free(m);
        return 1;
    }
    (void)remove(path);
    buf = malloc(len);
    if (!buf)
        return 1;
    for (size_t cut = 0; cut <= len; cut++, n++)
        (void)LLVMFuzzerTestOneInput(good, cut);
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit += 3, n++) {
            memcpy(buf, good, len);
            buf[i] ^= (uint8_t)(1u << bit);
            (void)LLVMFuzzerTestOneInput(buf, len);
        }
        memcpy(buf, good, len);
        buf[i] = 0xff;
        (void)LLVMFuzzerTestOneInput(buf, len);
        n++;
    }
    printf("fuzz_model: sweep of %d mutated inputs done\n", n);
    free(buf);
    free(good);
    nn_model_free(m);
    return 0;
}

int main(int argc, char **argv)
{
    int rc = 0, count = 0;
    for (int i = 1; i < argc; i++)
        rc |= replay(argv[i], &count);
    printf("fuzz_model: replayed %d corpus files\n", count);
    return rc | sweep();
}
#endif
