/*
 * dataset.h - the labelled images a model is trained and evaluated on.
 *
 * A data set is a folder with one sub-folder per class (PNG, JPEG or DICOM files inside), or a
 * CSV of path,label[,group]. Items are kept sorted (class, then path) so that a seed fully
 * determines the split. The split is stratified by class and grouped: all images of one group
 * (a patient, say) land in the same split, so none leaks from training into test. Non-logging:
 * every problem is appended to an error buffer, one line each, naming the file.
 */
#ifndef CXR_DATASET_H
#define CXR_DATASET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define DS_MAX_CLASSES 32

enum ds_split { DS_TRAIN = 0, DS_VAL = 1, DS_TEST = 2, DS_NSPLITS = 3,
               DS_NONE = 3 /* in no split: not listed in a split file */ };

struct ds_item {
    char *path;  /* as given or found (folder/class/file) */
    char *group; /* group key; by default the path itself (every image its own group) */
    int label;   /* index into ds.classes */
    int split;   /* enum ds_split */
};

struct ds {
    struct ds_item *items;
    size_t n, cap;
    char *classes[DS_MAX_CLASSES]; /* folder or CSV label names, sorted */
    int nclasses;
    int fixed_classes; /* set when classes came from outside (a model): unknown labels are errors */
};

void ds_init(struct ds *d);
void ds_done(struct ds *d);

/* Fixes the class list (e.g. a model's) before scanning; labels outside it become errors. */
cxr_err ds_set_classes(struct ds *d, const char *const *names, int n);

/* Scans DIR/<class>/<file>; hidden files and non-image extensions are skipped. */
cxr_err ds_scan_dir(struct ds *d, const char *dir, struct cxr_buf *errors);

/* Reads a CSV "path,label[,group]" (a header line is recognised and skipped); relative paths
 * are taken relative to the CSV's folder. */
cxr_err ds_read_csv(struct ds *d, const char *csv, struct cxr_buf *errors);

/* Sets each item's group from its file name: the first capture group of the POSIX extended
 * regex (or the whole match); names that do not match keep their own group. */
cxr_err ds_groups_from_regex(struct ds *d, const char *regex, struct cxr_buf *errors);

/* Stratified, grouped, seeded split: about val and test fractions of each class. */
cxr_err ds_split(struct ds *d, double val, double test, uint64_t seed);

/* Writes / reads a split file: CSV "path,label,group,split" with split train|val|test. Reading
 * assigns the split of every listed path; an item the file does not list is an error when
 * require_all (training: the split is stale), else it is put in DS_NONE (evaluation). */
cxr_err ds_split_write(const struct ds *d, const char *path);
cxr_err ds_split_read(struct ds *d, const char *path, bool require_all, struct cxr_buf *errors);

size_t ds_count(const struct ds *d, int split, int label); /* label -1: all classes */
const char *ds_split_name(int split);

/* The name a class is shown under: "COVID" -> "COVID-19", '_' -> ' '. Writes into out. */
void ds_display_name(const char *folder, char *out, size_t outlen);

/* splitmix64: the trainer's one seeded generator (state advanced in place). */
uint64_t ds_rand(uint64_t *state);
double ds_rand_unit(uint64_t *state); /* [0,1) */

#endif
