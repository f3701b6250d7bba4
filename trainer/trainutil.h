/*
 * trainutil.h - pieces the train and eval commands share: the decoded-image cache (filled by
 * loader threads through the daemon's pixel path), batched prediction over cached images,
 * simple scores for the training loop, and option parsing.
 */
#ifndef CXR_TRAINUTIL_H
#define CXR_TRAINUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common.h"
#include "dataset.h"
#include "model.h"

#define TU_NO_SLOT ((size_t)-1)

/* [0,1] images at one size, one slot per loaded item. */
struct tu_cache {
    int size;
    size_t nslots;
    float *pix;    /* nslots * size * size */
    size_t *slot;  /* per data-set item: its slot, or TU_NO_SLOT (not loaded or unreadable) */
    int *label;    /* per data-set item */
    size_t unreadable;
    size_t not_applicable; /* loaded, but the applicability gate would refuse them */
};

/*
 * Decodes the items whose split is set in split_mask (bit 1 << split) with `threads` threads.
 * Every unreadable file is appended to errors as "FILE: problem"; loading goes on, and the
 * count is in unreadable.
 */
cxr_err tu_cache_load(struct tu_cache *c, const struct ds *d, unsigned split_mask, int size,
                      int threads, struct cxr_buf *errors);
void tu_cache_done(struct tu_cache *c);

/* Softmax scores of n cached items (indices into the data set) into probs (n * classes). */
cxr_err tu_predict(const nn_model *m, const struct tu_cache *c, const size_t *items, size_t n,
                   float *probs);

struct tu_scores {
    double accuracy, macro_f1, loss;
    double recall[DS_MAX_CLASSES], precision[DS_MAX_CLASSES], f1[DS_MAX_CLASSES];
};

/* Accuracy, per-class precision/recall/F1, macro-F1 and mean cross-entropy. */
void tu_score(const float *probs, const int *labels, size_t n, int nc, struct tu_scores *ret);

/* Keys older trainers left in a model's metadata for --resume ("train_epoch", "train_rng",
 * ...): loop state, not a property of the model; export and train drop them. */
bool is_loop_state_key(const char *key);

/* "fnv1a64:..." over the sorted (file name, label, split) list: names the data (and split) a
 * model was trained on; stored as its dataset_fingerprint. */
void tu_dataset_fingerprint(const struct ds *d, char *out, size_t outlen);

int tu_argmax(const float *v, int n);
float *tu_alloc_floats(size_t n); /* 64-byte aligned, zeroed; free() it */
double tu_elapsed(const struct timespec *t0);

/* Parse a whole number / a number in [lo, hi]; print "NAME: ..." to stderr and return -1 on error. */
int tu_parse_int(const char *s, int lo, int hi, int *ret, const char *name);
int tu_parse_float(const char *s, float lo, float hi, float *ret, const char *name);

#endif
