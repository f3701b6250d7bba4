/*
 * nn_int.h - private structures of the CNN engine shared by its files (not part of model.h).
 *
 * A layer is plain data: its type, its hyper-parameters, its input and output shapes (C, H, W
 * of one image) and offsets of its parameters in the model's arena. The layer kernels in
 * layers.c take raw float pointers so that training and inference share them.
 */
#ifndef CXR_NN_INT_H
#define CXR_NN_INT_H

#include <stdint.h>

#include "model.h"

enum nn_layer_type {
    NN_L_CONV = 1,
    NN_L_BN = 2,
    NN_L_RELU = 3,
    NN_L_MAXPOOL = 4,
    NN_L_AVGPOOL = 5,
    NN_L_GAP = 6,
    NN_L_FLATTEN = 7,
    NN_L_DENSE = 8,
    NN_L_DROPOUT = 9,
};

#define NN_BN_EPS 1e-5f

struct nn_layer {
    enum nn_layer_type type;
    int out;     /* conv: output channels; dense: outputs (-1 in text = classes) */
    int k;       /* conv/pool kernel */
    int stride;
    int pad;
    float p;     /* dropout probability */
    int ic, ih, iw; /* input shape of one image */
    int oc, oh, ow; /* output shape */
    /* parameter offsets in the arena (floats), -1 when absent */
    long w, b, gamma, beta, mean, var;
    long nw;     /* conv: oc*ic*k*k, dense: out*in */
};

struct nn_meta {
    char key[NN_NAME_MAX];
    char value[NN_META_VALUE_MAX];
};

struct nn_model {
    int n_layers;
    struct nn_layer layers[NN_MAX_LAYERS];
    struct nn_input_spec spec;
    int n_classes;
    char classes[NN_MAX_CLASSES][NN_NAME_MAX];
    float *params;     /* the arena */
    size_t n_params;   /* floats in the arena (including BN running statistics) */
    size_t n_trainable;
    int n_meta;
    struct nn_meta meta[NN_MAX_META];
    char digest[NN_DIGEST_HEX];
};

/* pool.c: the engine's worker threads. fn(arg, task, worker) runs for every task in
 * [0, ntasks) on the caller and the pool's threads (worker in [0, nn_get_threads())); tasks
 * must write disjoint outputs. Serial when the pool has one thread or is busy. */
typedef void (*nn_task_fn)(void *arg, int task, int worker);
void nn_parallel(nn_task_fn fn, void *arg, int ntasks);
/* nn_serial(1): the calling thread's loops run on itself alone (and nn_get_threads() says 1)
 * until nn_serial(0). */
void nn_serial(int on);

/* Batch 1 on the pool or on the caller alone, whichever has lately been faster (infer.c).
 * Handing a layer's data between two cores can cost more than the second core saves: on a VM
 * whose vCPUs the hypervisor has put on different dies (a cache line's round trip ~330 ns
 * instead of ~60) batch 1 took 3.6-4.0 ms on two threads and 2.6-3.0 ms on one. Each mode's
 * wall time is kept (the lowest lately, nn_adapt_note); the first NN_ADAPT_FIRST calls
 * alternate, then the faster mode runs and the other is tried every NN_ADAPT_PROBE-th call, so
 * a change of placement is noticed within a few dozen inferences. Results do not depend on the mode (tasks write disjoint outputs). */
#define NN_ADAPT_PROBE 32
#define NN_ADAPT_FIRST 8 /* the first calls alternate */
struct nn_adapt {
    double ms[2]; /* [0] the pool, [1] serial; 0: not timed yet */
    unsigned calls;
};
int nn_adapt_pick(struct nn_adapt *a); /* 0 pool, 1 serial; counts the call */
void nn_adapt_note(struct nn_adapt *a, int mode, double ms);

/* The engine's one pseudo-random generator (xorshift64): weight initialisation, dropout. */
static inline uint64_t nn_xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

/* tensor.c */
void *nn_alloc(size_t bytes);            /* 64-byte aligned, zeroed; NULL on overflow/OOM */
void nn_free(void *p);
size_t nn_layer_in_len(const struct nn_layer *l);
size_t nn_layer_out_len(const struct nn_layer *l);

/* arch.c */
cxr_err nn_arch_parse(const char *text, int n_classes, struct nn_model *m, char *errbuf,
                      size_t errlen);
/* Computes shapes and parameter offsets from m->spec and the layer list. */
cxr_err nn_arch_resolve(struct nn_model *m, char *errbuf, size_t errlen);
double nn_layer_flops(const struct nn_layer *l);
const char *nn_layer_type_name(enum nn_layer_type t);

/* layers.c: kernels for one batch. col is the convolution's workspace: nn_conv_ws_len(l, batch)
 * floats (the im2col tile, or the direct path's padded operands). */
size_t nn_conv_col_len(const struct nn_layer *l);
size_t nn_conv_ws_len(const struct nn_layer *l, int batch);
void nn_conv_forward(const struct nn_layer *l, const float *w, const float *b, const float *x,
                     float *y, int batch, float *col, int relu);
/* The same with the weights already packed by nn_conv_pack() (direct path only; wpk NULL =
 * pack w into the workspace). */
void nn_conv_forward_packed(const struct nn_layer *l, const float *wpk, const float *w,
                            const float *b, const float *x, float *y, int batch, float *col,
                            int relu);

/* conv_direct.c: the direct 3x3 convolution on AVX-512, AVX2 or plain C (see the file's
 * comment; kernel.c chooses). */
int nn_conv_direct_shape(const struct nn_layer *l); /* 3x3, stride 1 or 2, pad 0..2 */
int nn_conv_is_direct(const struct nn_layer *l);    /* that shape, and a direct kernel runs */
size_t nn_conv_pack_len(const struct nn_layer *l);
void nn_conv_pack(const struct nn_layer *l, const float *w, float *wpk);
size_t nn_direct_ws_len(const struct nn_layer *l, int batch);
void nn_direct_forward(const struct nn_layer *l, const float *wpk, const float *w,
                       const float *b, const float *x, float *y, int batch, float *ws, int relu);
void nn_direct_backward(const struct nn_layer *l, const float *w, const float *x,
                        const float *dy, float *dw, float *dx, int batch, float *ws);
/* Winograd F(2x2, 3x3) for inference's stride-1 3x3 layers (conv_direct.c), where
 * nn_kernel_winograd() says the kernel uses it: weights transformed and packed once by
 * nn_wino_pack (nn_wino_pack_len floats), workspace nn_wino_ws_len floats. */
int nn_kernel_winograd(void);
int nn_conv_is_winograd(const struct nn_layer *l);
size_t nn_wino_pack_len(const struct nn_layer *l);
void nn_wino_pack(const struct nn_layer *l, const float *w, float *wpk);
size_t nn_wino_ws_len(const struct nn_layer *l, int batch);
void nn_wino_forward(const struct nn_layer *l, const float *wpk, const float *b, const float *x,
                     float *y, int batch, float *ws, int relu, int pool);
/* pool: the layer pool (a maxpool) that follows l can be fused into l's Winograd output
 * transform (2x2, stride 2, even output sides); nn_wino_forward(..., pool = 1) then writes
 * the pooled output. */
int nn_wino_can_pool(const struct nn_layer *l, const struct nn_layer *pool);
/* Training: the forward with the weights transformed on the fly, and the input gradient as the
 * forward of the transposed layer (where nn_wino_train_dx); nn_wino_train_ws_len floats. */
int nn_wino_train_dx(const struct nn_layer *l);
size_t nn_wino_train_ws_len(const struct nn_layer *l, int batch);
void nn_wino_forward_train(const struct nn_layer *l, const float *w, const float *b,
                           const float *x, float *y, int batch, float *ws, int relu);
void nn_wino_input_grad(const struct nn_layer *l, const float *w, const float *dy, float *dx,
                        int batch, float *ws);
void nn_conv_backward(const struct nn_layer *l, const float *w, const float *x, const float *dy,
                      float *dw, float *db, float *dx, int batch, float *col);
/* Batch norm in training mode; relu: apply the ReLU that follows in place (its backward is then
 * nn_bn_backward's relu_y: that ReLU's output). */
void nn_bn_forward_train(const struct nn_layer *l, const float *gamma, const float *beta,
                         float *run_mean, float *run_var, const float *x, float *y, int batch,
                         float *save_mean, float *save_istd, float momentum, int relu);
void nn_bn_forward_infer(const struct nn_layer *l, const float *gamma, const float *beta,
                         const float *mean, const float *var, const float *x, float *y,
                         int batch);
/* Batch norm in inference mode, backward to its input: dx = dy * gamma / sqrt(var + eps). */
void nn_bn_backward_infer(const struct nn_layer *l, const float *gamma, const float *var,
                          const float *dy, float *dx, int batch);
void nn_bn_backward(const struct nn_layer *l, const float *gamma, const float *x,
                    const float *dy, const float *save_mean, const float *save_istd,
                    float *dgamma, float *dbeta, float *dx, int batch, const float *relu_y);
void nn_relu_forward(const float *x, float *y, size_t n);
void nn_relu_backward(const float *y, const float *dy, float *dx, size_t n);
void nn_maxpool_forward(const struct nn_layer *l, const float *x, float *y, int32_t *argmax,
                        int batch);
void nn_maxpool_backward(const struct nn_layer *l, const float *dy, const int32_t *argmax,
                         float *dx, int batch);
void nn_avgpool_forward(const struct nn_layer *l, const float *x, float *y, int batch);
void nn_avgpool_backward(const struct nn_layer *l, const float *dy, float *dx, int batch);
void nn_gap_forward(const struct nn_layer *l, const float *x, float *y, int batch);
void nn_gap_backward(const struct nn_layer *l, const float *dy, float *dx, int batch);
void nn_dense_forward(const struct nn_layer *l, const float *w, const float *b, const float *x,
                      float *y, int batch, int relu);
void nn_dense_backward(const struct nn_layer *l, const float *w, const float *x,
                       const float *dy, float *dw, float *db, float *dx, int batch);
void nn_dropout_forward(float p, const float *x, float *y, uint8_t *mask, size_t n,
                        uint64_t *rng);
void nn_dropout_backward(float p, const float *dy, const uint8_t *mask, float *dx, size_t n);
void nn_softmax_forward(const float *x, float *y, int batch, int n);
void nn_softmax_backward(const float *y, const float *dy, float *dx, int batch, int n);

/* SHA-256 (checksum and digest) is common/sha256.h: cxr_sha256_*. */

/* file.c: internal loader entry (flags: NN_LOAD_SKIP_CHECKSUM for the fuzzer). */
#define NN_LOAD_SKIP_CHECKSUM 1u
cxr_err nn_model_load_mem_flags(const void *data, size_t len, unsigned flags,
                                nn_model **ret_model, char *errbuf, size_t errlen);
nn_model *nn_model_alloc(void);
/* net.c: the gradient arena of the last backward (tests); infer.c: logits of the last
 * nn_predict (batch x classes). */
const float *nn_train_grad(const nn_train *t);
const float *nn_ctx_logits(const nn_ctx *c);
/* infer.c, for Grad-CAM: whether layer `last`'s output is a step's output (no later layer folded
 * or fused into it, and it is not the logits); the forward of one image through that layer
 * (NULL when it is not), returning the context's buffer holding it, valid until the next call. */
int nn_ctx_can_stop_after(const nn_ctx *c, int last);
const float *nn_ctx_forward_through(nn_ctx *c, const float *input, int last);
/* nn_predict with each step's CPU time of the calling thread in step_s[i] (bench_cnn --steps);
 * nn_ctx_steps: the number of steps and their layer types (at most max names). */
cxr_err nn_predict_timed(nn_ctx *c, const float *input, int batch, float *probs, double *step_s);
int nn_ctx_steps(const nn_ctx *c, const char **names, int max);
cxr_err nn_model_alloc_params(nn_model *m);

void nn_errf(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
