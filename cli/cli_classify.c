/*
 * cli_classify.c - `cxrtriage classify [--model FILE] [--json] [--threads N] FILE...`.
 *
 * Loads the model once, then for each file (DICOM, PNG or JPEG) runs the one preprocessing
 * path (dicom/pixel.c), the applicability gate and the CNN, and prints the class scores and
 * the triage priority with its reason (the model's rule, model/triage.c, as the daemon applies
 * it without configuration overrides) as a table, or with --json one JSON object per file per
 * line. A file that cannot be read gets its
 * error on its own line; the others are still scored and the exit status is 1 at the end.
 * A file the gate refuses (not a frontal chest radiograph) is reported with the reason and no
 * scores, as the daemon would audit it.
 * With --heatmap OUT.png (one FILE) the scores come from a Grad-CAM context (model/gradcam.c,
 * the same numbers nn_predict gives) and the map of the top class (or --heatmap-class NAME) is
 * blended over the preprocessed image and written atomically, mode 0600 (it is patient data).
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>


#include "cli.h"
#include "cli_util.h"
#include "common.h"
#include "dicom.h"
#include "model.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: cxrtriage classify [--model FILE] [--json] [--threads N] FILE...\n"
            "       cxrtriage classify [options] --heatmap OUT.png [--heatmap-class NAME] FILE\n"
            "Scores DICOM, PNG or JPEG chest radiographs with the model (default: the bundled\n"
            "%s). Prints the class probabilities and the triage priority (urgent, routine or\n"
            "normal, by the model's triage rule) per file as a table, or with --json one\n"
            "object per line: file, verdict, reason, scores, top, triage, triage_reason,\n"
            "model_digest, ms (and heatmap, heatmap_class with --heatmap).\n"
            "  --heatmap OUT.png      also write where the model looked (Grad-CAM of its last\n"
            "                         convolutional layer) over the preprocessed image, as an\n"
            "                         RGB PNG (blue/green = low, yellow/red = high; mode 0600)\n"
            "  --heatmap-class NAME   the map of class NAME rather than the top-scoring one\n"
            "Exit status: 0 all files read, 1 a file or the model could not be read, 2 usage.\n"
            "%s\n",
            CXR_DEFAULT_MODEL_NAME, CXR_DISCLAIMER);
}

/* Writes s as a JSON string (quotes included). */
static void json_str(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        default:
            if (*p < 0x20)
                fprintf(out, "\\u%04x", *p);
            else
                fputc(*p, out);
        }
    }
    fputc('"', out);
}

/* The bundled model: the source tree's copy for a build, else the installed one. */
static const char *default_model(char *buf, size_t len, char *tried, size_t tlen)
{
    (void)snprintf(buf, len, "%s/%s", CXR_MODEL_SOURCE_DIR, CXR_DEFAULT_MODEL_NAME);
    if (access(buf, R_OK) == 0)
        return buf;
    (void)snprintf(tried, tlen, "'%s'", buf);
    (void)snprintf(buf, len, "%s/%s", CXR_MODEL_INSTALL_DIR, CXR_DEFAULT_MODEL_NAME);
    if (access(buf, R_OK) == 0)
        return buf;
    {
        size_t n = strlen(tried);
        (void)snprintf(tried + n, tlen - n, " or '%s'", buf);
    }
    return NULL;
}

/* The map blended over the preprocessed image, written atomically (0600: patient data). */
static cxr_err write_heatmap(const char *path, const float *unit, int size, const float *cam,
                             int ch, int cw, char *err, size_t errlen)
{
    unsigned char *png = NULL;
    size_t len = 0;
    cxr_err e = px_heatmap_png(unit, size, cam, ch, cw, &png, &len, err, errlen);
    if (e)
        return e;
    e = cxr_file_write_atomic(path, png, len, 0600);
    if (e)
        (void)snprintf(err, errlen, "%s: cannot write the heat map: %s", path, cxr_strerror(e));
    free(png);
    return e;
}

cxr_err cli_scorer_open(struct cli_scorer *s, const char *model_path, char *err, size_t errlen)
{
    const struct nn_input_spec *spec;
    cxr_err e;

    memset(s, 0, sizeof(*s));
    s->cam_cls = -1;
    e = nn_model_load(model_path, &s->m, err, errlen);
    if (e != CXR_OK)
        return e;
    spec = nn_model_input_spec(s->m);
    if (strcmp(spec->preprocessing, PX_PREPROC_NAME) != 0) {
        (void)snprintf(err, errlen,
                       "%s: the model wants preprocessing '%s', this build implements '%s'",
                       model_path, spec->preprocessing, PX_PREPROC_NAME);
        cli_scorer_close(s);
        return CXR_EUNSUPPORTED;
    }
    s->px.size = spec->size;
    s->px.channels = spec->channels;
    s->px.mean = spec->mean;
    s->px.std = spec->std;
    s->input = malloc(sizeof(float) * nn_model_input_len(s->m));
    s->unit = malloc(sizeof(float) * (size_t)spec->size * (size_t)spec->size);
    if (!s->input || !s->unit || nn_ctx_new(s->m, 1, &s->ctx) != CXR_OK) {
        (void)snprintf(err, errlen, "out of memory");
        cli_scorer_close(s);
        return CXR_ENOMEM;
    }
    return CXR_OK;
}

cxr_err cli_scorer_heatmap(struct cli_scorer *s, int cls, char *err, size_t errlen)
{
    cxr_err e = nn_gradcam_new(s->m, &s->gc, err, errlen);
    if (e != CXR_OK)
        return e;
    nn_gradcam_dims(s->gc, &s->cam_h, &s->cam_w);
    s->cam = malloc(sizeof(float) * (size_t)s->cam_h * (size_t)s->cam_w);
    if (!s->cam) {
        (void)snprintf(err, errlen, "out of memory");
        return CXR_ENOMEM;
    }
    s->cam_cls = cls;
    return CXR_OK;
}

cxr_err cli_scorer_file(struct cli_scorer *s, const char *path, float *probs,
                        struct px_verdict *v, char *err, size_t errlen)
{
    cxr_err e = px_load_unit(path, s->px.size, s->unit, v, err, errlen);
    s->cam_used = -1;
    if (e != CXR_OK || !v->applicable)
        return e;
    px_normalize(&s->px, s->unit, s->input);
    if (s->gc)
        return nn_gradcam_run(s->gc, s->input, s->cam_cls, probs, s->cam, &s->cam_used);
    return nn_predict(s->ctx, s->input, 1, probs);
}

void cli_scorer_close(struct cli_scorer *s)
{
    free(s->input);
    free(s->unit);
    free(s->cam);
    nn_gradcam_free(s->gc);
    nn_ctx_free(s->ctx);
    nn_model_free(s->m);
    memset(s, 0, sizeof(*s));
}

int cli_classify(int argc, char **argv)
{
    const char *model_path = NULL, *heatmap = NULL, *heatmap_class = NULL;
    char pathbuf[4096], tried[8300] = "", err[1024];
    int json = 0, threads = 1, first = 0, rc = 0;
    struct cli_scorer sc;
    const nn_model *m;
    float probs[NN_MAX_CLASSES];
    int cam_cls = -1;
    struct nn_triage_rule rule;
    char rule_text[2048], why[512];

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            model_path = argv[++i];
        } else if (!strcmp(argv[i], "--heatmap") && i + 1 < argc) {
            heatmap = argv[++i];
        } else if (!strcmp(argv[i], "--heatmap-class") && i + 1 < argc) {
            heatmap_class = argv[++i];
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 64) {
                fprintf(stderr, "cxrtriage classify: --threads wants 1..64\n");
                return 2;
            }
            threads = (int)v;
        } else if (!strcmp(argv[i], "--")) {
            first = i + 1;
            break;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "cxrtriage classify: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else {
            first = i;
            break;
        }
    }
    if (first == 0 || first >= argc) {
        usage(stderr);
        return 2;
    }
    if (heatmap_class && !heatmap) {
        fprintf(stderr, "cxrtriage classify: --heatmap-class needs --heatmap OUT.png\n");
        return 2;
    }
    if (heatmap && argc - first != 1) {
        fprintf(stderr, "cxrtriage classify: --heatmap takes exactly one FILE (got %d)\n",
                argc - first);
        return 2;
    }
    if (!model_path) {
        model_path = default_model(pathbuf, sizeof(pathbuf), tried, sizeof(tried));
        if (!model_path) {
            fprintf(stderr,
                    "cxrtriage classify: no model: the bundled model %s does not exist; "
                    "give one with --model FILE (cxrtriage-train writes them)\n",
                    tried);
            return 1;
        }
    }
    /* Reuse the large per-image buffers instead of fresh mmap'ed pages (see cxrtriaged). */
    (void)mallopt(M_MMAP_THRESHOLD, 256 << 20);
    (void)mallopt(M_TRIM_THRESHOLD, 512 << 20);
    if (cli_scorer_open(&sc, model_path, err, sizeof(err)) != CXR_OK) {
        fprintf(stderr, "cxrtriage classify: %s\n", err);
        return 1;
    }
    m = sc.m;
    if (nn_triage_rule_init(m, &rule, err, sizeof(err)) != CXR_OK) {
        fprintf(stderr, "cxrtriage classify: %s: %s\n", model_path, err);
        cli_scorer_close(&sc);
        return 1;
    }
    (void)nn_triage_rule_text(&rule, m, rule_text, sizeof(rule_text));
    if (heatmap_class) {
        for (int c = 0; c < nn_model_num_classes(m); c++)
            if (!strcmp(nn_model_class_name(m, c), heatmap_class))
                cam_cls = c;
        if (cam_cls < 0) {
            fprintf(stderr, "cxrtriage classify: --heatmap-class '%s': the model has no such "
                    "class (it has:", heatmap_class);
            for (int c = 0; c < nn_model_num_classes(m); c++)
                fprintf(stderr, "%s '%s'", c ? "," : "", nn_model_class_name(m, c));
            fprintf(stderr, ")\n");
            cli_scorer_close(&sc);
            return 2;
        }
    }
    (void)nn_set_threads(threads > NN_MAX_THREADS ? NN_MAX_THREADS : threads);
    if (heatmap && cli_scorer_heatmap(&sc, cam_cls, err, sizeof(err)) != CXR_OK) {
        fprintf(stderr, "cxrtriage classify: %s: %s\n", model_path, err);
        rc = 1;
        goto out;
    }
    if (!json) {
        printf("%-10s", "verdict");
        for (int c = 0; c < nn_model_num_classes(m); c++)
            printf(" %15.15s", nn_model_class_name(m, c));
        printf("  %-15s %-7s %7s  %s\n", "top", "triage", "ms", "file");
    }
    for (int i = first; i < argc; i++) {
        struct px_verdict v = {0};
        double t0 = cli_mono_ms();
        int top = 0, nc = nn_model_num_classes(m), used;
        const char *heat_done = NULL;
        cxr_err e = cli_scorer_file(&sc, argv[i], probs, &v, err, sizeof(err));
        used = sc.cam_used;
        if (e == CXR_OK && v.applicable && sc.gc) {
            e = write_heatmap(heatmap, sc.unit, sc.px.size, sc.cam, sc.cam_h, sc.cam_w, err,
                              sizeof(err));
            if (e == CXR_OK)
                heat_done = heatmap;
        }
        if (e != CXR_OK) {
            rc = 1;
            if (json) {
                printf("{\"file\":");
                json_str(stdout, argv[i]);
                printf(",\"error\":");
                json_str(stdout, err[0] ? err : cxr_strerror(e));
                printf("}\n");
            } else {
                if (err[0])
                    printf("error: %s\n", err);
                else
                    printf("error: %s: %s\n", argv[i], cxr_strerror(e));
            }
            err[0] = '\0';
            continue;
        }
        double ms = cli_mono_ms() - t0;
        const char *prio = NULL;
        for (int c = 1; v.applicable && c < nc; c++)
            if (probs[c] > probs[top])
                top = c;
        if (v.applicable)
            prio = nn_priority_name(nn_triage_apply(&rule, m, probs, why, sizeof(why)));
        if (json) {
            printf("{\"file\":");
            json_str(stdout, argv[i]);
            printf(",\"verdict\":\"%s\",\"reason\":", v.applicable ? "applicable" : "skipped");
            json_str(stdout, v.reason);
            if (v.applicable) {
                printf(",\"scores\":{");
                for (int c = 0; c < nc; c++) {
                    printf("%s", c ? "," : "");
                    json_str(stdout, nn_model_class_name(m, c));
                    printf(":%.6f", (double)probs[c]);
                }
                printf("},\"top\":");
                json_str(stdout, nn_model_class_name(m, top));
                printf(",\"triage\":");
                if (prio)
                    json_str(stdout, prio);
                else
                    printf("null");
                printf(",\"triage_reason\":");
                json_str(stdout, why);
            } else {
                printf(",\"scores\":null,\"top\":null,\"triage\":null,\"triage_reason\":null");
            }
            if (heat_done) {
                printf(",\"heatmap\":");
                json_str(stdout, heat_done);
                printf(",\"heatmap_class\":");
                json_str(stdout, nn_model_class_name(m, used));
            }
            printf(",\"model_digest\":\"%s\",\"ms\":%.2f}\n", nn_model_digest(m), ms);
        } else {
            printf("%-10s", v.applicable ? "applicable" : "skipped");
            for (int c = 0; c < nc; c++) {
                if (v.applicable)
                    printf(" %15.4f", (double)probs[c]);
                else
                    printf(" %15s", "-");
            }
            printf("  %-15.15s %-7s %7.1f  %s\n", v.applicable ? nn_model_class_name(m, top) : "-",
                   prio ? prio : "-", ms, argv[i]);
            if (!v.applicable)
                printf("  skipped: %s\n", v.reason);
            else
                printf("  triage: %s\n", why);
            if (heat_done)
                printf("  heat map (Grad-CAM, class %s): %s\n", nn_model_class_name(m, used),
                       heat_done);
        }
        if (sc.gc && !v.applicable) {
            fprintf(stderr, "cxrtriage classify: %s: no heat map written: the image was not "
                    "scored (%s)\n", argv[i], v.reason);
            rc = 1;
        }
        (void)fflush(stdout);
    }
    if (!json)
        printf("model %s (sha256:%s)\ntriage rule: %s\n%s\n", model_path, nn_model_digest(m),
               rule_text, CXR_DISCLAIMER);
out:
    cli_scorer_close(&sc);
    return rc;
}
