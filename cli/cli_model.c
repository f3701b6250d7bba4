/* cli_model.c - `cxrtriage model info FILE`: what a .cxrm model file holds, after validating it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "model.h"

static void usage(FILE *out)
{
    fprintf(out, "Usage: cxrtriage model info FILE\n"
                 "Validates the model file FILE (.cxrm) and prints its architecture, parameter\n"
                 "count, FLOPs per image, input spec, classes, triage rule, training metadata\n"
                 "and digest.\n"
                 "Exit status: 0 valid, 1 invalid or unreadable (also: malformed triage\n"
                 "operating points), 2 usage.\n");
}

static int model_info(const char *path)
{
    nn_model *m = NULL;
    char err[512] = "", *desc = NULL;
    const struct nn_input_spec *s;
    struct nn_triage_rule rule;
    char rule_text[2048];
    size_t need;
    int rc = 0;
    cxr_err e = nn_model_load(path, &m, err, sizeof(err));
    if (e) {
        fprintf(stderr, "cxrtriage: %s\n", err);
        return 1;
    }
    s = nn_model_input_spec(m);
    printf("model file:    %s\n", path);
    printf("digest:        sha256:%s\n", nn_model_digest(m));
    printf("input:         %d x %d, %d channel%s, preprocessing '%s', mean %.6g, std %.6g\n",
           s->size, s->size, s->channels, s->channels == 1 ? "" : "s", s->preprocessing,
           (double)s->mean, (double)s->std);
    printf("classes:       %d:", nn_model_num_classes(m));
    for (int i = 0; i < nn_model_num_classes(m); i++)
        printf("%s '%s'", i ? "," : "", nn_model_class_name(m, i));
    /* The rule the daemon would apply (before any configuration override). */
    if (nn_triage_rule_init(m, &rule, err, sizeof(err)) == CXR_OK) {
        (void)nn_triage_rule_text(&rule, m, rule_text, sizeof(rule_text));
        printf("\ntriage rule:   %s", rule_text);
    } else {
        printf("\ntriage rule:   invalid: %s", err);
        rc = 1;
    }
    printf("\nparameters:    %zu\n", nn_model_param_count(m));
    printf("FLOPs/image:   %.1f M (forward; a multiply-add counts 2)\n", nn_model_flops(m) / 1e6);
    (void)nn_kernel_describe(err, sizeof(err));
    printf("conv kernel:   %s\n", err);
    need = nn_model_describe(m, NULL, 0) + 1;
    desc = malloc(need);
    if (desc) {
        (void)nn_model_describe(m, desc, need);
        printf("architecture:\n%s", desc);
        free(desc);
    }
    printf("metadata:      %d entr%s\n", nn_model_meta_count(m),
           nn_model_meta_count(m) == 1 ? "y" : "ies");
    for (int i = 0; i < nn_model_meta_count(m); i++) {
        const char *k, *v;
        if (nn_model_meta_at(m, i, &k, &v))
            printf("  %s = %s\n", k, v);
    }
    nn_model_free(m);
    return rc;
}

int cli_model(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    if (argc != 3 || strcmp(argv[1], "info") != 0) {
        usage(stderr);
        return 2;
    }
    return model_info(argv[2]);
}
