/*
 * export.c - `cxrtriage-train export --model IN --out OUT [--set KEY=VALUE]...
 *             [--data DIR --split-file F | --thresholds LIST]`
 *
 * Writes a copy of a model for deployment: the file is loaded and validated, training-loop
 * state that older trainers left in its metadata (is_loop_state_key()) is dropped, the triage
 * rule's operating points are recomputed on the validation split (--data, operating.h) or set
 * by hand (--thresholds) or else kept, the given keys are set, and the copy is written
 * atomically. The weights are never touched. Prints the new digest, which is what the daemon
 * logs and audits with every score.
 */
#include "export.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "dicom.h"
#include "eval.h"
#include "model.h"
#include "operating.h"
#include "trainutil.h"

static void usage(FILE *out)
{
    fprintf(out, "Usage: cxrtriage-train export --model IN --out OUT [--set KEY=VALUE]...\n"
                 "         [--data DIR|CSV --split-file F [--threads N] | --thresholds LIST]\n"
                 "Writes a deployment copy of a model: validated, training state removed from its\n"
                 "metadata, KEY=VALUE pairs added. Prints the copy's SHA-256 digest.\n"
                 "The triage rule's operating points (metadata %s, %s, %s):\n"
                 "  --data D --split-file F  recompute them on the validation split of F: abnormal\n"
                 "                           classes at one-vs-rest sensitivity >= %.2f, normal at\n"
                 "                           precision >= %.2f (see the model card)\n"
                 "  --thresholds LIST        set them by hand, e.g. 'COVID-19=0.4,Normal=0.7'\n"
                 "                           (unlisted classes keep their value)\n"
                 "  (neither)                keep the model's\n",
            NN_META_TRIAGE_THRESHOLDS, NN_META_TRIAGE_NORMAL, NN_META_TRIAGE_METHOD,
            OP_SENSITIVITY, OP_NORMAL_PRECISION);
}

/* Recomputes the operating points on the validation split of data + split_file. */
static int recompute(nn_model *m, const char *data, const char *split_file, int threads)
{
    struct ev_scores sc;
    struct cxr_buf errors;
    struct op_figures f;
    struct nn_triage_rule rule;
    const char *trained_on = nn_model_meta(m, "dataset_fingerprint");
    const char *base = strrchr(split_file, '/');
    char source[256], err[1024];
    int rc = 1;

    memset(&sc, 0, sizeof(sc));
    ds_init(&sc.d);
    cxr_buf_init(&errors, 1 << 20);
    (void)nn_set_threads(threads > NN_MAX_THREADS ? NN_MAX_THREADS : threads);
    if (dcm_global_init() != CXR_OK) {
        fprintf(stderr, "cxrtriage-train: cannot initialise the DICOM codecs\n");
        goto out;
    }
    if (ev_score(m, data, split_file, DS_VAL, threads, &sc, &errors) != CXR_OK) {
        fprintf(stderr, "%s", cxr_buf_str(&errors));
        goto out;
    }
    if (sc.cache.unreadable) {
        fprintf(stderr, "%scxrtriage-train: %zu unreadable validation image(s); fix or remove "
                        "them\n", cxr_buf_str(&errors), sc.cache.unreadable);
        goto out;
    }
    if (trained_on && strcmp(trained_on, sc.fingerprint) != 0)
        fprintf(stderr, "cxrtriage-train: warning: the data and split (%s) are not those the "
                        "model was trained on (%s)\n", sc.fingerprint, trained_on);
    (void)snprintf(source, sizeof(source), "validation split (%s) of data set %s",
                   base ? base + 1 : split_file, sc.fingerprint);
    if (op_set_model(m, sc.n, sc.truth, sc.probs, source, &f, err, sizeof(err)) != CXR_OK ||
        nn_triage_rule_init(m, &rule, err, sizeof(err)) != CXR_OK) {
        fprintf(stderr, "cxrtriage-train: %s\n", err);
        goto out;
    }
    op_print(stdout, "validation", &rule, m, &f);
    rc = 0;
out:
    ev_scores_done(&sc);
    cxr_buf_done(&errors);
    return rc;
}

int export_main(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *sets[32], *data = NULL, *split_file = NULL;
    const char *thresholds = NULL;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int nsets = 0, rc = 1, threads = cores > 0 ? (int)cores : 1;
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
        else if (!strcmp(a, "--data"))
            data = v;
        else if (!strcmp(a, "--split-file"))
            split_file = v;
        else if (!strcmp(a, "--thresholds"))
            thresholds = v;
        else if (!strcmp(a, "--threads")) {
            if (tu_parse_int(v, 1, 256, &threads, "--threads"))
                return 2;
        } else {
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
    if (!data != !split_file || (data && thresholds)) {
        fprintf(stderr, "cxrtriage-train export: give --data with --split-file (recompute the "
                        "operating points) or --thresholds (set them), not both\n");
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
    if (data && recompute(m, data, split_file, threads) != 0)
        goto out;
    if (thresholds && op_set_by_hand(m, thresholds, err, sizeof(err)) != CXR_OK) {
        fprintf(stderr, "cxrtriage-train: %s\n", err);
        goto out;
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
