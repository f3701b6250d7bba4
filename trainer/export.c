/*
 * export.c - `cxrtriage-train export --model IN --out OUT [--set KEY=VALUE]...`
 *
 * Writes a copy of a model for deployment: the file is loaded and validated, training-loop
 * state that older trainers left in its metadata (is_loop_state_key()) is dropped, the given
 * keys are set, and the copy is written atomically. Prints the new digest, which is what the
 * daemon logs and audits with every score.
 */
#include "export.h"

#include <stdio.h>
#include <string.h>

#include "common.h"
#include "model.h"
#include "trainutil.h"

static void usage(FILE *out)
{
    fprintf(out, "Usage: cxrtriage-train export --model IN --out OUT [--set KEY=VALUE]...\n"
                 "Writes a deployment copy of a model: validated, training state removed from its\n"
                 "metadata, KEY=VALUE pairs added. Prints the copy's SHA-256 digest.\n");
}

int export_main(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *sets[32];
    int nsets = 0, rc = 1;
    nn_model *m = NULL;
    char err[1024];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "cxrtriage-train export: '%s' needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--model"))
            in = v;
        else if (!strcmp(a, "--out"))
            out = v;
        else if (!strcmp(a, "--set") && nsets < (int)CXR_ARRAY_SIZE(sets))
            sets[nsets++] = v;
        else {
            fprintf(stderr, "cxrtriage-train export: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (!in || !out) {
        usage(stderr);
        return 2;
    }
    if (nn_model_load(in, &m, err, sizeof(err)) != CXR_OK) {
        fprintf(stderr, "cxrtriage-train: %s\n", err);
        return 1;
    }
    for (int k = nn_model_meta_count(m) - 1; k >= 0; k--) {
        const char *key, *val;
        if (nn_model_meta_at(m, k, &key, &val) && is_loop_state_key(key))
            (void)nn_model_del_meta(m, key);
    }
    for (int k = 0; k < nsets; k++) {
        char key[128];
        const char *eq = strchr(sets[k], '=');
        if (!eq || eq == sets[k] || (size_t)(eq - sets[k]) >= sizeof(key)) {
            fprintf(stderr, "cxrtriage-train: --set '%s', expected KEY=VALUE\n", sets[k]);
            goto out;
        }
        snprintf(key, sizeof(key), "%.*s", (int)(eq - sets[k]), sets[k]);
        if (nn_model_set_meta(m, key, eq + 1) != CXR_OK) {
            fprintf(stderr, "cxrtriage-train: --set '%s': key or value too long, or too many keys\n",
                    sets[k]);
            goto out;
        }
    }
    if (nn_model_save(m, out, err, sizeof(err)) != CXR_OK) {
        fprintf(stderr, "cxrtriage-train: %s\n", err);
        goto out;
    }
    printf("model: %s\ndigest: %s\n", out, nn_model_digest(m));
    rc = 0;
out:
    nn_model_free(m);
    return rc;
}
