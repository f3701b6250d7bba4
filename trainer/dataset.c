/*
 * dataset.c - scanning, CSV reading, grouping and the stratified grouped split.
 *
 * DESIGN: the split assigns whole groups. For each class we take the groups whose first item
 * has that class, shuffle them with the seed, and fill test, then validation, until each holds
 * its fraction of the class's images; the rest is training. Sorting before shuffling makes
 * the result independent of directory order.
 */
#include "dataset.h"

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

uint64_t ds_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

double ds_rand_unit(uint64_t *state)
{
    return (double)(ds_rand(state) >> 11) * (1.0 / 9007199254740992.0);
}

void ds_init(struct ds *d)
{
    memset(d, 0, sizeof(*d));
}

void ds_done(struct ds *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->items[i].path);
        free(d->items[i].group);
    }
    free(d->items);
    for (int c = 0; c < d->nclasses; c++)
        free(d->classes[c]);
    memset(d, 0, sizeof(*d));
}

const char *ds_split_name(int split)
{
    static const char *const names[] = {"train", "val", "test"};
    return split >= 0 && split < DS_NSPLITS ? names[split] : "?";
}

void ds_display_name(const char *folder, char *out, size_t outlen)
{
    size_t i;

    if (!strcasecmp(folder, "COVID") || !strcasecmp(folder, "COVID19")) {
        snprintf(out, outlen, "COVID-19");
        return;
    }
    for (i = 0; folder[i] && i + 1 < outlen; i++)
        out[i] = folder[i] == '_' ? ' ' : folder[i];
    if (outlen)
        out[i] = '\0';
}

/* "Viral Pneumonia" and "Viral_Pneumonia" are the same class. */
static int class_cmp(const char *a, const char *b)
{
    for (;; a++, b++) {
        char x = *a == ' ' ? '_' : *a, y = *b == ' ' ? '_' : *b;
        if (x != y)
            return (unsigned char)x - (unsigned char)y;
        if (!x)
            return 0;
    }
}

static int class_find(const struct ds *d, const char *name)
{
    for (int c = 0; c < d->nclasses; c++)
        if (!class_cmp(d->classes[c], name))
            return c;
    return -1;
}

cxr_err ds_set_classes(struct ds *d, const char *const *names, int n)
{
    if (n < 2 || n > DS_MAX_CLASSES || d->nclasses)
        return CXR_EINVAL;
    for (int c = 0; c < n; c++) {
        d->classes[c] = strdup(names[c]);
        if (!d->classes[c])
            return CXR_ENOMEM;
        d->nclasses = c + 1;
    }
    d->fixed_classes = 1;
    return CXR_OK;
}

static cxr_err class_add(struct ds *d, const char *name, int *ret)
{
    int c = class_find(d, name);

    if (c >= 0) {
        *ret = c;
        return CXR_OK;
    }
    if (d->fixed_classes)
        return CXR_ENOTFOUND;
    if (d->nclasses == DS_MAX_CLASSES)
        return CXR_ELIMIT;
    d->classes[d->nclasses] = strdup(name);
    if (!d->classes[d->nclasses])
        return CXR_ENOMEM;
    *ret = d->nclasses++;
    return CXR_OK;
}

static cxr_err item_add(struct ds *d, const char *path, int label, const char *group)
{
    struct ds_item *it;

    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 256;
        struct ds_item *p = realloc(d->items, cap * sizeof(*p));
        if (!p)
            return CXR_ENOMEM;
        d->items = p;
        d->cap = cap;
    }
    it = &d->items[d->n];
    it->path = strdup(path);
    it->group = strdup(group ? group : path);
    it->label = label;
    it->split = DS_TRAIN;
    if (!it->path || !it->group) {
        free(it->path);
        free(it->group);
        return CXR_ENOMEM;
    }
    d->n++;
    return CXR_OK;
}

static int is_image_name(const char *name)
{
    static const char *const exts[] = {".png", ".jpg", ".jpeg", ".dcm", ".dicom"};
    const char *dot = strrchr(name, '.');

    if (!dot)
        return 1; /* DICOM files often have no extension: let the reader decide */
    for (size_t i = 0; i < CXR_ARRAY_SIZE(exts); i++)
        if (!strcasecmp(dot, exts[i]))
            return 1;
    return 0;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names of the entries of dir (hidden ones skipped). */
static cxr_err list_dir(const char *dir, char ***ret, size_t *ret_n)
{
    DIR *dh = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0;

    if (!dh)
        return errno == ENOENT ? CXR_ENOTFOUND : CXR_EIO;
    while ((e = readdir(dh))) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char **p = realloc(names, ncap * sizeof(*p));
            if (!p)
                goto out_nomem;
            names = p;
            cap = ncap;
        }
        names[n] = strdup(e->d_name);
        if (!names[n])
            goto out_nomem;
        n++;
    }
    (void)closedir(dh);
    if (n)
        qsort(names, n, sizeof(*names), str_cmp);
    *ret = names;
    *ret_n = n;
    return CXR_OK;
out_nomem:
    (void)closedir(dh);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return CXR_ENOMEM;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

cxr_err ds_scan_dir(struct ds *d, const char *dir, struct cxr_buf *errors)
{
    char **classes = NULL;
    size_t nclasses = 0;
    cxr_err err, first = CXR_OK;
    int found = 0;

    err = list_dir(dir, &classes, &nclasses);
    if (err) {
        (void)cxr_buf_printf(errors, "%s: cannot read the data folder: %s\n", dir,
                             err == CXR_ENOTFOUND ? "no such directory" : cxr_strerror(err));
        return err;
    }
    for (size_t c = 0; c < nclasses; c++) {
        char sub[4096], path[4096];
        char **files = NULL;
        size_t nfiles = 0;
        int label, images = 0;

        snprintf(sub, sizeof(sub), "%s/%s", dir, classes[c]);
        if (!cxr_is_dir(sub))
            continue; /* a README or manifest beside the class folders */
        err = class_add(d, classes[c], &label);
        if (err == CXR_ENOTFOUND) {
            (void)cxr_buf_printf(errors, "%s: unknown class folder '%s' (the model's classes "
                                         "are fixed; expected one of them)\n", sub, classes[c]);
            first = first ? first : CXR_EINVAL;
            continue;
        }
        if (err) {
            (void)cxr_buf_printf(errors, "%s: %s\n", sub, err == CXR_ELIMIT ?
                                 "too many class folders" : cxr_strerror(err));
            free_names(classes, nclasses);
            return err;
        }
        err = list_dir(sub, &files, &nfiles);
        if (err) {
            (void)cxr_buf_printf(errors, "%s: cannot read: %s\n", sub, cxr_strerror(err));
            first = first ? first : err;
            continue;
        }
        for (size_t f = 0; f < nfiles && !err; f++) {
            int len = snprintf(path, sizeof(path), "%s/%s", sub, files[f]);
            if (len < 0 || (size_t)len >= sizeof(path) || !is_image_name(files[f]) ||
                cxr_is_dir(path))
                continue;
            err = item_add(d, path, label, NULL);
            images++;
        }
        free_names(files, nfiles);
        if (err) {
            free_names(classes, nclasses);
            return err;
        }
        if (!images) {
            (void)cxr_buf_printf(errors, "%s: class folder '%s' holds no images\n", sub,
                                 classes[c]);
            first = first ? first : CXR_EINVAL;
        }
        found++;
    }
    free_names(classes, nclasses);
    if (!first && found < 2) {
        (void)cxr_buf_printf(errors, "%s: found %d class folder(s), need at least 2 "
                                     "(one sub-folder of images per class)\n", dir, found);
        first = CXR_EINVAL;
    }
    return first;
}

/* Splits a CSV line in place into at most max fields (no quoting: paths with commas are not
 * supported and are reported by the caller as a wrong field count). */
static int csv_fields(char *line, char **f, int max)
{
    int n = 0;
    char *p = line;

    line[strcspn(line, "\r\n")] = '\0';
    while (n < max) {
        f[n++] = p;
        p = strchr(p, ',');
        if (!p)
            break;
        *p++ = '\0';
    }
    return p ? max + 1 : n;
}

cxr_err ds_read_csv(struct ds *d, const char *csv, struct cxr_buf *errors)
{
    FILE *fh = fopen(csv, "r");
    char *line = NULL, base[4096];
    size_t cap = 0;
    int lineno = 0;
    cxr_err first = CXR_OK, err = CXR_OK;

    if (!fh) {
        (void)cxr_buf_printf(errors, "%s: cannot open: %s\n", csv, strerror(errno));
        return CXR_EIO;
    }
    snprintf(base, sizeof(base), "%s", csv);
    snprintf(base, sizeof(base), "%s", dirname(base));
    while (getline(&line, &cap, fh) > 0 && !err) {
        char *f[4] = {NULL}, path[4096];
        int n, label, len;

        lineno++;
        n = csv_fields(line, f, 3);
        if (n == 1 && !f[0][0])
            continue;
        if (lineno == 1 && n >= 2 && (!strcasecmp(f[0], "path") || !strcasecmp(f[0], "file")))
            continue;
        if (n < 2 || n > 3 || !f[0][0] || !f[1][0]) {
            (void)cxr_buf_printf(errors, "%s:%d: expected 'path,label[,group]'\n", csv, lineno);
            first = first ? first : CXR_EPARSE;
            continue;
        }
        err = class_add(d, f[1], &label);
        if (err == CXR_ENOTFOUND) {
            (void)cxr_buf_printf(errors, "%s:%d: unknown class '%s'\n", csv, lineno, f[1]);
            first = first ? first : CXR_EINVAL;
            err = CXR_OK;
            continue;
        }
        if (err)
            break;
        if (f[0][0] == '/')
            len = snprintf(path, sizeof(path), "%s", f[0]);
        else
            len = snprintf(path, sizeof(path), "%s/%s", base, f[0]);
        if (len < 0 || (size_t)len >= sizeof(path)) {
            (void)cxr_buf_printf(errors, "%s:%d: path too long\n", csv, lineno);
            first = first ? first : CXR_ELIMIT;
            continue;
        }
        err = item_add(d, path, label, n == 3 && f[2][0] ? f[2] : NULL);
    }
    free(line);
    (void)fclose(fh);
    if (err) {
        (void)cxr_buf_printf(errors, "%s: %s\n", csv, cxr_strerror(err));
        return err;
    }
    if (!first && d->nclasses < 2) {
        (void)cxr_buf_printf(errors, "%s: found %d class(es), need at least 2\n", csv,
                             d->nclasses);
        first = CXR_EINVAL;
    }
    return first;
}

cxr_err ds_groups_from_regex(struct ds *d, const char *regex, struct cxr_buf *errors)
{
    regex_t re;
    int r = regcomp(&re, regex, REG_EXTENDED);

    if (r) {
        char msg[256];
        regerror(r, &re, msg, sizeof(msg));
        (void)cxr_buf_printf(errors, "--group-regex '%s': %s\n", regex, msg);
        return CXR_EINVAL;
    }
    for (size_t i = 0; i < d->n; i++) {
        const char *name = strrchr(d->items[i].path, '/');
        regmatch_t m[2];
        char *g;
        size_t k;

        name = name ? name + 1 : d->items[i].path;
        if (regexec(&re, name, 2, m, 0) != 0)
            continue;
        k = m[1].rm_so >= 0 ? 1 : 0;
        g = strndup(name + m[k].rm_so, (size_t)(m[k].rm_eo - m[k].rm_so));
        if (!g) {
            regfree(&re);
            return CXR_ENOMEM;
        }
        free(d->items[i].group);
        d->items[i].group = g;
    }
    regfree(&re);
    return CXR_OK;
}

struct group {
    const char *key;
    int label;
    size_t count;
    size_t first; /* index of its first item in sorted order */
};

static int item_order(const void *a, const void *b, void *ctx)
{
    const struct ds *d = ctx;
    const size_t ia = *(const size_t *)a, ib = *(const size_t *)b;
    int c = strcmp(d->items[ia].group, d->items[ib].group);

    return c ? c : strcmp(d->items[ia].path, d->items[ib].path);
}

cxr_err ds_split(struct ds *d, double val, double test, uint64_t seed)
{
    size_t *order, ngroups = 0;
    struct group *groups;
    cxr_err err = CXR_OK;

    if (val < 0 || test < 0 || val + test >= 1.0)
        return CXR_EINVAL;
    if (!d->n)
        return CXR_OK;
    order = malloc(d->n * sizeof(*order));
    groups = malloc(d->n * sizeof(*groups));
    if (!order || !groups) {
        err = CXR_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < d->n; i++)
        order[i] = i;
    qsort_r(order, d->n, sizeof(*order), item_order, d);
    for (size_t i = 0; i < d->n; i++) {
        const struct ds_item *it = &d->items[order[i]];
        if (!ngroups || strcmp(groups[ngroups - 1].key, it->group) != 0) {
            groups[ngroups].key = it->group;
            groups[ngroups].label = it->label;
            groups[ngroups].count = 0;
            groups[ngroups].first = i;
            ngroups++;
        }
        groups[ngroups - 1].count++;
    }
    for (int c = 0; c < d->nclasses; c++) {
        uint64_t rng = seed ^ (0xA24BAED4963EE407ULL * (uint64_t)(c + 1));
        size_t total = 0, ng = 0, *idx, taken_test = 0, taken_val = 0;

        for (size_t g = 0; g < ngroups; g++)
            if (groups[g].label == c) {
                total += groups[g].count;
                ng++;
            }
        if (!ng)
            continue;
        idx = malloc(ng * sizeof(*idx));
        if (!idx) {
            err = CXR_ENOMEM;
            goto out;
        }
        ng = 0;
        for (size_t g = 0; g < ngroups; g++)
            if (groups[g].label == c)
                idx[ng++] = g;
        for (size_t i = ng; i > 1; i--) { /* Fisher-Yates */
            size_t j = (size_t)(ds_rand(&rng) % i), t = idx[i - 1];
            idx[i - 1] = idx[j];
            idx[j] = t;
        }
        for (size_t k = 0; k < ng; k++) {
            const struct group *g = &groups[idx[k]];
            int split;
            if ((double)taken_test < test * (double)total) {
                split = DS_TEST;
                taken_test += g->count;
            } else if ((double)taken_val < val * (double)total) {
                split = DS_VAL;
                taken_val += g->count;
            } else {
                split = DS_TRAIN;
            }
            for (size_t m = 0; m < g->count; m++)
                d->items[order[g->first + m]].split = split;
        }
        free(idx);
    }
out:
    free(order);
    free(groups);
    return err;
}

cxr_err ds_split_write(const struct ds *d, const char *path)
{
    struct cxr_buf b;
    cxr_err err = CXR_OK;

    cxr_buf_init(&b, (size_t)1 << 30);
    err = cxr_buf_puts(&b, "path,label,group,split\n");
    for (size_t i = 0; i < d->n && !err; i++)
        err = cxr_buf_printf(&b, "%s,%s,%s,%s\n", d->items[i].path,
                             d->classes[d->items[i].label], d->items[i].group,
                             ds_split_name(d->items[i].split));
    if (!err)
        err = cxr_file_write_atomic(path, cxr_buf_str(&b), b.len, 0644);
    cxr_buf_done(&b);
    return err;
}

static int path_cmp_idx(const void *a, const void *b, void *ctx)
{
    const struct ds *d = ctx;

    return strcmp(d->items[*(const size_t *)a].path, d->items[*(const size_t *)b].path);
}

cxr_err ds_split_read(struct ds *d, const char *path, bool require_all, struct cxr_buf *errors)
{
    FILE *fh = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0, *order = NULL;
    char *seen = NULL;
    int lineno = 0;
    cxr_err first = CXR_OK;

    if (!fh) {
        (void)cxr_buf_printf(errors, "%s: cannot open: %s\n", path, strerror(errno));
        return CXR_EIO;
    }
    order = malloc((d->n ? d->n : 1) * sizeof(*order));
    seen = calloc(d->n ? d->n : 1, 1);
    if (!order || !seen) {
        first = CXR_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < d->n; i++)
        order[i] = i;
    qsort_r(order, d->n, sizeof(*order), path_cmp_idx, d);
    while (getline(&line, &cap, fh) > 0) {
        char *f[5] = {NULL};
        int n, split = -1;
        size_t lo = 0, hi = d->n;

        lineno++;
        n = csv_fields(line, f, 4);
        if (lineno == 1 && !strcmp(f[0], "path"))
            continue;
        if (n == 1 && !f[0][0])
            continue;
        if (n != 4) {
            (void)cxr_buf_printf(errors, "%s:%d: expected 'path,label,group,split'\n", path, lineno);
            first = first ? first : CXR_EPARSE;
            continue;
        }
        for (int s = 0; s < DS_NSPLITS; s++)
            if (!strcmp(f[3], ds_split_name(s)))
                split = s;
        if (split < 0) {
            (void)cxr_buf_printf(errors, "%s:%d: split '%s', expected train, val or test\n",
                                 path, lineno, f[3]);
            first = first ? first : CXR_EPARSE;
            continue;
        }
        while (lo < hi) { /* lower bound by path */
            size_t mid = (lo + hi) / 2;
            if (strcmp(d->items[order[mid]].path, f[0]) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < d->n && !strcmp(d->items[order[lo]].path, f[0])) {
            d->items[order[lo]].split = split;
            seen[order[lo]] = 1;
        }
    }
    for (size_t i = 0; i < d->n; i++) {
        if (seen[i])
            continue;
        d->items[i].split = DS_NONE;
        if (require_all) {
            (void)cxr_buf_printf(errors, "%s: the split file does not list '%s' (a stale "
                                         "split? write a new one)\n", path, d->items[i].path);
            first = first ? first : CXR_EINVAL;
        }
    }
out:
    free(line);
    free(order);
    free(seen);
    (void)fclose(fh);
    return first;
}

size_t ds_count(const struct ds *d, int split, int label)
{
    size_t n = 0;

    for (size_t i = 0; i < d->n; i++)
        if ((split < 0 || d->items[i].split == split) && (label < 0 || d->items[i].label == label))
            n++;
    return n;
}
