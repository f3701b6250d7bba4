/*
 * test_model_mk.c - writes a .cxrm model for tests (not a test itself):
 *   test_model_mk ARCH OUT.cxrm [trained]
 * ARCH is a built-in name or an architecture file; four classes (COVID-19, Lung Opacity,
 * Normal, Viral Pneumonia); weights from the deterministic hash (nn_model_fill_hashed) and a
 * few metadata entries. Used by the CLI integration tests and to make the fuzz corpus.
 */
#include <stdio.h>

#include "model.h"

int main(int argc, char **argv)
{
    static const char *const classes[] = {"COVID-19", "Lung Opacity", "Normal",
                                          "Viral Pneumonia"};
    nn_model *m = NULL;
    char err[512] = "";
    if (argc != 3) {
        fprintf(stderr, "usage: test_model_mk ARCH OUT.cxrm\n");
        return 2;
    }
    if (nn_model_build(argv[1], NULL, 4, classes, 1, &m, err, sizeof(err)) != CXR_OK) {
        fprintf(stderr, "test_model_mk: %s\n", err);
        return 1;
    }
    nn_model_fill_hashed(m);
    nn_model_set_normalisation(m, 0.5f, 0.25f);
    if (nn_model_set_meta(m, "note", "test model with hash-derived weights, not trained") ||
        nn_model_set_meta(m, "date", "2026-11-22") ||
        nn_model_save(m, argv[2], err, sizeof(err)) != CXR_OK) {
        fprintf(stderr, "test_model_mk: %s\n", err);
        nn_model_free(m);
        return 1;
    }
    printf("%s\n", nn_model_digest(m));
    nn_model_free(m);
    return 0;
}
