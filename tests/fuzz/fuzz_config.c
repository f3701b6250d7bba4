/*
 * fuzz_config.c - libFuzzer target for the configuration parser (config/config.c over libinih).
 *
 * The input is a configuration file: it is written to a memfd and loaded with cfg_load() through
 * /proc/self/fd/N (the path the daemon's loader takes), over the defaults. A file that loads is
 * resolved, dumped (cxrtriage config show) and its thresholds, AE allow-list and destinations are
 * used as the daemon uses them. An input starting with a NUL byte is instead a list of
 * NUL-separated section, key, value triples for cfg_set() (the command-line overrides).
 *
 * Asserted (abort() = a finding): CXR_EPARSE comes with at least one error line and every error
 * text ends in a newline; a file that loads can be dumped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "fz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const struct cxr_buf *b)
{
    fprintf(stderr, "fuzz_config: %s\n%s\n", what, cxr_buf_str(b));
    abort();
}

static void check_errors(cxr_err rc, const struct cxr_buf *errs)
{
    if (rc == CXR_EPARSE && errs->len == 0)
        fail("CXR_EPARSE without an error line", errs);
    if (errs->len && errs->data[errs->len - 1] != '\n')
        fail("an error text that does not end in a newline", errs);
}

static void count_threshold(void *user, const char *name, double value)
{
    if (!(value >= 0.0 && value <= 1.0) || !name)
        abort();
    (*(int *)user)++;
}

static void use(struct cfg_config *c)
{
    struct cxr_buf dump;
    const struct cfg_dest *dests[CFG_MAX_DESTS + 2];
    char bad[64];
    int n = 0;

    cxr_buf_init(&dump, 1u << 20);
    if (cfg_resolve(c) == CXR_OK && cfg_dump(c, &dump) != CXR_OK)
        fail("a configuration that loads cannot be dumped", &dump);
    cxr_buf_done(&dump);
    (void)cfg_destinations(c, dests, (int)CXR_ARRAY_SIZE(dests));
    (void)cfg_parse_thresholds(c->thresholds, count_threshold, &n, bad, sizeof(bad));
    (void)cfg_aet_allowed(c->allowed_calling_aets, "PACS", "127.0.0.1");
    (void)cfg_aet_allowed(c->allowed_calling_aets, "", "::1");
    (void)cfg_is_valid_ae_title(c->ae_title);
}

static void set_triples(const uint8_t *data, size_t size)
{
    static struct cfg_config c;
    struct cxr_buf errs;
    char *text = malloc(size + 1);
    const char *part[3];
    size_t i = 1;

    if (!text)
        return;
    memcpy(text, data, size);
    text[size] = '\0';
    cfg_defaults(&c);
    cxr_buf_init(&errs, 1u << 16);
    while (i < size) {
        for (int k = 0; k < 3; k++) {
            part[k] = text + (i < size ? i : size);
            i += strlen(part[k]) + 1;
        }
        check_errors(cfg_set(&c, part[0], part[1], part[2], "--fuzz", &errs), &errs);
    }
    use(&c);
    cxr_buf_done(&errs);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct cfg_config c; /* about 20 KB: not on the stack */
    struct cxr_buf errs;
    cxr_err rc;

    if (size > 0 && data[0] == 0) {
        set_triples(data, size);
        return 0;
    }
    cfg_defaults(&c);
    cxr_buf_init(&errs, 1u << 16);
    rc = cfg_load(&c, fz_as_file(data, size), &errs);
    check_errors(rc, &errs);
    if (rc == CXR_OK)
        use(&c);
    cxr_buf_done(&errs);
    return 0;
}
