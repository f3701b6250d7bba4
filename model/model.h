/*
 * model.h - the CNN engine of cxrtriage: architectures, training, the .cxrm model file and
 * inference, on OpenBLAS.
 *
 * DESIGN
 * - A model (nn_model) is an architecture (a list of layers described as data, see
 *   model/archs/ for the text format), an input spec, class names, one arena holding every
 *   float32 parameter, and key/value metadata. It is built from an architecture name or text
 *   (nn_model_build) or loaded from a .cxrm file (nn_model_load), and saved with nn_model_save.
 * - Inference uses a context per thread (nn_ctx_new): it snapshots the weights with batch
 *   normalisation folded into the preceding convolution and ReLU fused into its epilogue, and
 *   owns a workspace sized once for max_batch, so nn_predict performs no heap allocation.
 *   Contexts of one model may run concurrently; the model must not change meanwhile.
 * - Training (nn_train) shares the layer code: forward in training mode (batch statistics,
 *   dropout), loss (class-weighted, label-smoothed cross-entropy) giving dlogits, backward,
 *   and an Adam or SGD-with-momentum step with weight decay.
 * - The library never logs and never calls exit(); errors are cxr_err plus a message written
 *   to errbuf naming the file and the part at fault. The engine's thread count is set once
 *   with nn_set_threads (see pool.c).
 * Tensors are NCHW float32; every buffer the library allocates is 64-byte aligned.
 */
#ifndef CXR_MODEL_H
#define CXR_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The engine's threads (1 = the calling thread only, the default; at most NN_MAX_THREADS).
 * Layers split their work across them themselves, so OpenBLAS is set to one thread. Call at
 * start-up, not while a prediction or a training step runs. */
#define NN_MAX_THREADS 8
cxr_err nn_set_threads(int n);
int nn_get_threads(void);

/*
 * The convolution kernel (model/kernel.c), chosen once, on first use, for the whole process:
 *   "avx512"  direct 3x3 convolution (stride 1 and 2) on AVX-512F
 *   "avx2"    the same on AVX2 + FMA
 *   "generic" the same in plain C (CPUs with neither)
 *   "im2col"  im2col + OpenBLAS sgemm for every convolution
 * On every path, convolutions that are not 3x3 with stride 1 or 2 use im2col + OpenBLAS. The
 * default is the first of the list the CPU runs. The environment variable CXR_KERNEL (one of
 * the four names) forces a lower path, e.g. CXR_KERNEL=avx2 to measure or test the AVX2 path on
 * an AVX-512 machine; a path the CPU cannot run is ignored (the default runs) and
 * nn_kernel_describe says why. Programs print nn_kernel_describe once at start-up.
 */
#define NN_KERNEL_ENV "CXR_KERNEL"
enum nn_kernel {
    NN_KERNEL_IM2COL = 0,
    NN_KERNEL_GENERIC = 1,
    NN_KERNEL_AVX2 = 2,
    NN_KERNEL_AVX512 = 3,
    NN_KERNEL__COUNT
};
enum nn_kernel nn_kernel(void);
/* The kernel in use: "avx512", "avx2", "generic" or "im2col". */
const char *nn_kernel_name(void);
/* One line for the logs: the kernel, why it was chosen (or why CXR_KERNEL was ignored) and the
 * CPU's vector extensions, e.g. "avx2 (chosen by CXR_KERNEL; CPU has avx512f avx2 fma; 3x3
 * direct, other shapes im2col + OpenBLAS)". snprintf-like return. */
size_t nn_kernel_describe(char *buf, size_t len);
/* Whether this CPU runs kernel k; when not, *ret_reason (may be NULL) says why. */
bool nn_kernel_supported(enum nn_kernel k, const char **ret_reason);
const char *nn_kernel_name_of(enum nn_kernel k); /* NULL when out of range */
int nn_kernel_from_name(const char *name);       /* -1 when unknown */
/* Switches kernels (tests, benchmarks); CXR_EINVAL when the CPU cannot run k. Not while a
 * prediction or a training step runs; contexts and training states made before stay valid. */
cxr_err nn_kernel_set(enum nn_kernel k);

typedef struct nn_model nn_model;
typedef struct nn_ctx nn_ctx;
typedef struct nn_train nn_train;

#define NN_MAX_CLASSES 64
#define NN_MAX_LAYERS 128
#define NN_NAME_MAX 64     /* class names, preprocessing name, metadata keys (with NUL) */
#define NN_META_VALUE_MAX 1024
#define NN_MAX_META 64
#define NN_DIGEST_HEX 65   /* SHA-256 as lowercase hex plus NUL */
#define NN_PREPROC_CXR_V1 "cxr-pixel-v1"

/* The model's input: a square image of size x size with `channels` planes, produced by the
 * named preprocessing and normalised as (x - mean) / std. */
struct nn_input_spec {
    int size;
    int channels;
    char preprocessing[NN_NAME_MAX];
    float mean;
    float std;
};

/* ---- architectures ---- */

/* Names of the built-in architectures ("compact", "seed001", "seed004"), NULL-terminated. */
const char *const *nn_arch_names(void);

/* The text of a built-in architecture, or NULL when name is unknown. */
const char *nn_arch_text(const char *name);

/*
 * Builds a trainable model from an architecture: `arch` is a built-in name, the architecture
 * text itself (anything containing a newline), or else a path to an architecture text file. The input spec's size and channels
 * override the architecture's `input` line when they are > 0. class_names has n_classes
 * entries. Parameters are initialised (He uniform) from seed. Errors: CXR_EINVAL, CXR_EPARSE
 * (bad architecture text, with line number in errbuf), CXR_EMODEL (shapes do not chain),
 * CXR_ENOMEM, CXR_EIO.
 */
cxr_err nn_model_build(const char *arch, const struct nn_input_spec *spec, int n_classes,
                       const char *const *class_names, uint32_t seed, nn_model **ret_model,
                       char *errbuf, size_t errlen);

/* Loads and validates a .cxrm file (see model/file.c for the layout). Errors: CXR_EIO,
 * CXR_ENOTFOUND, CXR_EMODEL with errbuf naming the part at fault. */
cxr_err nn_model_load(const char *path, nn_model **ret_model, char *errbuf, size_t errlen);

/* Same from memory (the digest is that of the bytes). */
cxr_err nn_model_load_mem(const void *data, size_t len, nn_model **ret_model, char *errbuf,
                          size_t errlen);

/* Writes the model to path atomically (sets the model's digest to that of the file). */
cxr_err nn_model_save(nn_model *model, const char *path, char *errbuf, size_t errlen);

/* Serialises to a malloc'ed buffer (caller frees). */
cxr_err nn_model_serialize(const nn_model *model, uint8_t **ret_data, size_t *ret_len,
                           char *errbuf, size_t errlen);

void nn_model_free(nn_model *model);

/* Sets (or replaces) a metadata key/value pair (e.g. "dataset_sha256", "date", "val_acc"). */
cxr_err nn_model_set_meta(nn_model *model, const char *key, const char *value);
/* Removes a metadata key; false when it was not set. */
bool nn_model_del_meta(nn_model *model, const char *key);
/* Value of a metadata key, or NULL. */
const char *nn_model_meta(const nn_model *model, const char *key);
int nn_model_meta_count(const nn_model *model);
/* The i-th metadata pair; false when i is out of range. */
bool nn_model_meta_at(const nn_model *model, int i, const char **ret_key, const char **ret_value);

int nn_model_num_classes(const nn_model *model);
const char *nn_model_class_name(const nn_model *model, int i);
const struct nn_input_spec *nn_model_input_spec(const nn_model *model);
/* Sets mean and std of the input normalisation (the trainer computes them). */
void nn_model_set_normalisation(nn_model *model, float mean, float std);
/* SHA-256 of the file it was loaded from or last saved to; "" for a model never saved. */
const char *nn_model_digest(const nn_model *model);
size_t nn_model_param_count(const nn_model *model);
/* Multiply-adds counted as 2 FLOPs, for one image, forward pass. */
double nn_model_flops(const nn_model *model);
/* Floats per input image: channels * size * size. */
size_t nn_model_input_len(const nn_model *model);
/* Writes a human-readable description of the layers (one per line, with output shapes,
 * parameters and FLOPs) into buf; returns the length it needed (snprintf-like). */
size_t nn_model_describe(const nn_model *model, char *buf, size_t len);
/* The architecture as text (parseable by nn_model_build). Same return convention. */
size_t nn_model_arch_text(const nn_model *model, char *buf, size_t len);

/* Fills every parameter (and batch-norm running statistics) deterministically from a 32-bit
 * integer hash; used to compare with PyTorch on identical weights (see model/golden/). */
void nn_model_fill_hashed(nn_model *model);
/* The same hash-derived input: n floats in [-1, 1). */
void nn_fill_hashed_input(float *x, size_t n, uint32_t stream);

/* ---- inference ---- */

/* A per-thread inference context for batches of up to max_batch images. */
cxr_err nn_ctx_new(const nn_model *model, int max_batch, nn_ctx **ret_ctx);
void nn_ctx_free(nn_ctx *ctx);

/* Scores `batch` images (input NCHW, batch * nn_model_input_len floats) and writes batch *
 * num_classes softmax probabilities to probs. No heap allocation. CXR_EINVAL when batch is
 * out of range. */
cxr_err nn_predict(nn_ctx *ctx, const float *input, int batch, float *probs);

/* ---- Grad-CAM (model/gradcam.c) ----
 * Where the model looked: Grad-CAM (Selvaraju et al. 2017) over the model's last convolutional
 * layer, taken after its batch normalisation and ReLU (the activation A the next layer reads).
 * The forward pass is the inference one (running statistics, no dropout); the backward pass is
 * the engine's own, from the chosen class's logit (before softmax) down to A only:
 *   alpha_k = mean over positions of d logit_c / d A_k,  cam = ReLU(sum_k alpha_k A_k),
 * then divided by its maximum (an all-zero map stays zero). One image at a time. */
typedef struct nn_gradcam nn_gradcam;
/* Allocates everything the context needs, once; CXR_EMODEL when the model has no convolution. */
cxr_err nn_gradcam_new(const nn_model *model, nn_gradcam **ret, char *errbuf, size_t errlen);
void nn_gradcam_free(nn_gradcam *g);
/* The map's grid: the last convolutional layer's output height and width. */
void nn_gradcam_dims(const nn_gradcam *g, int *ret_h, int *ret_w);
/* Scores one image (nn_model_input_len floats) and writes its map (h * w floats in [0,1], row
 * major) for class cls (-1: the highest-scoring class); probs (num_classes floats) and ret_cls
 * (the class used) may be NULL. No heap allocation. CXR_EINVAL for a class out of range. */
cxr_err nn_gradcam_run(nn_gradcam *g, const float *input, int cls, float *probs, float *cam,
                       int *ret_cls);

/* ---- the triage rule (model/triage.c) ----
 * Maps a model's class probabilities to a priority. Rule NN_TRIAGE_RULE_NAME: when the score of
 * any class other than the normal class is at or above that class's threshold the image is
 * urgent (the triggering class with the highest score is named); else, when the normal class's
 * score is at or above its threshold, normal; else routine. The thresholds are the operating
 * points the trainer chose on validation data and stored in the model's metadata
 * (NN_META_TRIAGE_THRESHOLDS: "COVID-19=0.412;Lung Opacity=0.5;..." with every class, and
 * NN_META_TRIAGE_NORMAL: the normal class's name); the daemon's configuration may override any
 * of them with nn_triage_rule_set. */
#define NN_TRIAGE_RULE_NAME "cxr-triage-v1"
#define NN_META_TRIAGE_THRESHOLDS "triage_thresholds"
#define NN_META_TRIAGE_NORMAL "triage_normal_class"
#define NN_META_TRIAGE_METHOD "triage_method" /* how the operating points were chosen, as text */

enum nn_priority { NN_PRIO_NONE = 0, NN_PRIO_URGENT, NN_PRIO_ROUTINE, NN_PRIO_NORMAL };
const char *nn_priority_name(enum nn_priority p); /* "urgent", "routine", "normal"; NULL for NONE */

struct nn_triage_rule {
    int n_classes;
    int normal_class;                 /* index of the normal class, -1 when the model has none */
    float threshold[NN_MAX_CLASSES];  /* per class, in [0,1] */
    bool overridden[NN_MAX_CLASSES];  /* set by configuration rather than the model */
};

/* Reads the model's stored operating points. A model without them (older files) gets 0.5 for
 * every class and normal_class from a class named "Normal" (or -1): that is stated by
 * nn_triage_rule_text. Errors: CXR_EMODEL when the metadata is malformed or names a class the
 * model does not have (errbuf says which). */
cxr_err nn_triage_rule_init(const nn_model *model, struct nn_triage_rule *ret, char *errbuf,
                            size_t errlen);
/* Overrides one class's threshold; CXR_ENOTFOUND (errbuf names the class and lists the model's
 * classes) when the model has no such class, CXR_EINVAL outside [0,1]. */
cxr_err nn_triage_rule_set(struct nn_triage_rule *rule, const nn_model *model,
                           const char *class_name, float threshold, char *errbuf, size_t errlen);
/* Applies the rule to one image's probabilities; reason (may be NULL) gets e.g.
 * "COVID-19 0.912 >= 0.412" or "no class at its threshold; Normal 0.31 < 0.60". */
enum nn_priority nn_triage_apply(const struct nn_triage_rule *rule, const nn_model *model,
                                 const float *probs, char *reason, size_t len);
/* The rule as one line, recorded on every audit row:
 * "cxr-triage-v1 urgent: COVID-19>=0.412 Lung Opacity>=0.5 Viral Pneumonia>=0.3; normal:
 * Normal>=0.6 (source: model|config|default)". snprintf-like return. */
size_t nn_triage_rule_text(const struct nn_triage_rule *rule, const nn_model *model, char *buf,
                           size_t len);

/* ---- training ---- */

enum nn_optim { NN_OPT_ADAM = 0, NN_OPT_SGD = 1 };

struct nn_train_opts {
    enum nn_optim optim;
    float lr;
    float momentum;     /* SGD */
    float beta1, beta2, eps; /* Adam */
    float weight_decay; /* L2 on conv and dense weights (not biases, not batch norm) */
    float label_smoothing;
    uint32_t seed;      /* dropout masks */
};

/* Defaults: Adam, lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 1e-4, smoothing 0. */
void nn_train_opts_default(struct nn_train_opts *opts);

/* Training state for `model` (borrowed; it must outlive the nn_train) for batches up to
 * max_batch: activations, gradients and optimiser moments. */
cxr_err nn_train_new(nn_model *model, int max_batch, const struct nn_train_opts *opts,
                     nn_train **ret_train);
void nn_train_free(nn_train *train);

void nn_train_set_lr(nn_train *train, float lr);
/* Freezes the first n layers of the layer list (their parameters are not updated and their
 * batch-norm statistics are not changed). n = 0 unfreezes everything. */
void nn_train_freeze(nn_train *train, int n_layers);
/* Per-class loss weights (num_classes floats); NULL means all 1. */
cxr_err nn_train_set_class_weights(nn_train *train, const float *weights);

/* Forward pass in training mode; returns a pointer to the logits (batch x classes) held by
 * train, valid until the next call. */
cxr_err nn_train_forward(nn_train *train, const float *input, int batch, const float **ret_logits);

/* Weighted, label-smoothed softmax cross-entropy of logits against labels; writes the mean
 * loss and dlogits (batch x classes). Pure function, usable on its own. */
cxr_err nn_loss_xent(const float *logits, const int *labels, int batch, int n_classes,
                     const float *class_weights, float smoothing, float *ret_loss,
                     float *dlogits);

/* Backward from dlogits (batch x classes, same batch as the last forward). */
cxr_err nn_train_backward(nn_train *train, const float *dlogits);

/* One optimiser step with the gradients of the last backward. */
void nn_train_step(nn_train *train);

/* Forward, loss, backward and step in one call. */
cxr_err nn_train_batch(nn_train *train, const float *input, const int *labels, int batch,
                       float *ret_loss);

#ifdef __cplusplus
}
#endif
#endif
