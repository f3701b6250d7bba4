/*
 * conv_direct.c - direct 3x3 convolution (stride 1 and 2) on AVX-512, AVX2 or plain C, forward
 * and backward, and Winograd F(2x2, 3x3) for stride 1.
 *
 * The im2col path copies its input nine times and then runs OpenBLAS, whose kernels are AVX2
 * on the project's machines (OPENBLAS_CORETYPE=Haswell). This path needs no im2col: the input
 * of the whole batch is copied once into a zero-padded "flat" layout, xp[c][q], one channel
 * after the other, each image an (H + 2p) x (W + 2p) block of it. In that layout the input of
 * tap (ky, kx) for output position q is simply xp[c][q + ky * Wp + kx], so one output tile is
 * a sum of unit-stride vector loads times broadcast weights:
 *
 *     out[o][q] = b[o] + sum_c sum_ky,kx w[o][c][ky][kx] * xp[c][q + ky * Wp + kx]
 *
 * computed for 4 output channels x 96 positions at a time in 24 AVX-512 accumulators (measured
 * a little faster than 8 x 48: 4 broadcasts and 6 loads per 24 FMAs instead of 8 and 3). Positions
 * in the padding columns and rows are computed too and dropped when the result is copied out
 * (the price of unit-stride loads: 7 % of the work at 56 x 56, 23 % at 14 x 14).
 *
 * Backward: the input gradient of a stride-1 convolution is the same kind of convolution of the
 * output gradient (padded by k - 1 - p) with the weights flipped and their channel axes
 * swapped; the weight gradient is a correlation, dw[o][c][t] = sum_q dy[o][q] xp[c][q + off_t],
 * computed with positions in the vector lanes (3 output channels x 9 taps = 27 accumulators)
 * and reduced once per block of positions.
 *
 * Stride 2 (forward only) is four stride-1 convolutions: the padded input is split into its
 * four phases P_ab[i][j] = x[2i + a][2j + b], and tap (ky, kx) reads phase (ky % 2, kx % 2) at
 * offset (ky / 2, kx / 2); a phase's taps are 4, 2, 2 or 1 of the nine. Its weight gradient is
 * the same correlation over the phases; its input gradient is four stride-1 correlations of dy,
 * one per phase of the (padded) input, woven back together.
 *
 * Work is split across the engine's threads (pool.c) by channel for the copies, by blocks of
 * positions (and of output channels when positions are few) for the convolutions and by
 * output channels for the weight gradient, so every task writes its own part of the output.
 *
 * The tiles exist three times: AVX-512F (below), AVX2 + FMA (4 output channels x 3 vectors of
 * 8, and a weight gradient one kernel row at a time, since 16 ymm registers cannot hold 27
 * accumulators) and plain C; kernel.c chooses one per process and nothing outside the tiles
 * (and the stride-2 copies) carries a target attribute, so this file runs on any x86-64. For
 * other shapes, and with the "im2col" kernel, layers.c keeps the im2col path. Results agree
 * with it to float rounding: the sums are the same, in a different order.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <immintrin.h>

#include "nn_int.h"

#define DC_MR 4       /* output channels per tile */
#define DC_NV 6       /* vectors of 16 positions per tile (at most 6: see dconv_rows) */
#define DC_NR (16 * DC_NV) /* positions per tile */
#define DC_QB 384     /* positions per task of the forward loop (a multiple of DC_NR) */
_Static_assert(DC_QB % (16 * DC_NV) == 0, "forward tasks must hold whole tiles");
#define DW_QB 2048    /* positions per block of the weight-gradient loop (a block of
                       * three dy rows and one input row stays in L1) */
#define DC_ALIGN 16   /* floats: channel strides are multiples of 64 bytes */

static size_t round_up(size_t n, size_t m)
{
    return (n + m - 1) / m * m;
}

int nn_conv_direct_shape(const struct nn_layer *l)
{
    return l->k == 3 && (l->stride == 1 || l->stride == 2) && l->pad >= 0 && l->pad <= 2;
}

int nn_conv_is_direct(const struct nn_layer *l)
{
    return nn_conv_direct_shape(l) && nn_kernel() != NN_KERNEL_IM2COL;
}

/*
 * The flat geometry of one padded operand: nph phase planes per channel, each holding n images
 * of wp-float rows, image n starting at n * img, its pixel (y, x) at (y + off) * wp + x + off;
 * per plane cs floats. Outputs are computed for q in [0, q) (a multiple of DC_NR covering the
 * last valid output) and land at n * img + oy * wp + ox. Reads reach 2 * (wp + 1) + 16 floats
 * beyond q. Taps: for each phase, their offsets and kernel indices (ky * 3 + kx).
 *
 * With one pixel of padding and stride 1, neighbouring rows and images share their zero
 * padding (rows of w + 1 floats, images of h + 1 rows): the left pad of a row is the right pad
 * of the one before, so fewer positions are computed and dropped (at 14 x 14, 82 % of the
 * positions are outputs instead of 68 %).
 */
struct dgeo {
    int hp, wp, nph, off, ktot; /* ktot: taps per channel over all phases (9) */
    size_t img, qv, q, cs;      /* qv: one past the last valid output position */
    size_t chs, tb[9];          /* per channel: nph * cs floats; each tap's plane + offset, in
                                 * the order the packed weights follow (phase, then tap) */
    int ntap[4];
    int toff[4][9];
    int kidx[4][9];
};

/* The flat tap list of g's phases (after cs, ntap and toff are set). */
static void set_taps(struct dgeo *g)
{
    int k = 0;
    g->chs = (size_t)g->nph * g->cs;
    for (int ph = 0; ph < g->nph; ph++)
        for (int t = 0; t < g->ntap[ph]; t++)
            g->tb[k++] = (size_t)ph * g->cs + (size_t)g->toff[ph][t];
    g->ktot = k;
}

static struct dgeo geo(int h, int w, int pad, int stride, int batch, int oh, int ow)
{
    struct dgeo g;
    memset(&g, 0, sizeof(g));
    if (stride == 1) {
        const int shared = pad == 1;
        g.hp = shared ? h + 1 : h + 2 * pad;
        g.wp = shared ? w + 1 : w + 2 * pad;
        g.off = pad;
        g.nph = 1;
        for (int t = 0; t < 9; t++) {
            g.toff[0][t] = (t / 3) * g.wp + t % 3;
            g.kidx[0][t] = t;
        }
        g.ntap[0] = 9;
    } else {
        g.hp = (h + 2 * pad + 1) / 2;
        g.wp = (w + 2 * pad + 1) / 2;
        g.off = pad;
        g.nph = 4;
        for (int ky = 0; ky < 3; ky++)
            for (int kx = 0; kx < 3; kx++) {
                int ph = (ky % 2) * 2 + kx % 2, t = g.ntap[ph]++;
                g.toff[ph][t] = (ky / 2) * g.wp + kx / 2;
                g.kidx[ph][t] = ky * 3 + kx;
            }
    }
    g.img = (size_t)g.hp * g.wp;
    g.qv = g.img * (batch - 1) + (size_t)(oh - 1) * g.wp + ow;
    g.q = round_up(g.qv, DC_NR);
    /* the images themselves (and the shared bottom pad row) must fit below the reads' end */
    g.cs = round_up(g.q + 2 * (size_t)(g.wp + 1) + 16, DC_ALIGN);
    if (g.cs < g.img * batch + g.wp + 16)
        g.cs = round_up(g.img * batch + g.wp + 16, DC_ALIGN);
    set_taps(&g);
    return g;
}

/* Forward operands: the input's planes; the output is on the same grid. */
static struct dgeo fwd_geo(const struct nn_layer *l, int batch)
{
    return geo(l->ih, l->iw, l->pad, l->stride, batch, l->oh, l->ow);
}

/* Input-gradient operands (stride 1): dy padded by 2 - p; the result has the input's shape. */
static struct dgeo bwd_geo(const struct nn_layer *l, int batch)
{
    return geo(l->oh, l->ow, l->k - 1 - l->pad, 1, batch, l->ih, l->iw);
}

size_t nn_conv_pack_len(const struct nn_layer *l)
{
    return round_up((size_t)l->oc, DC_MR) * l->ic * 9;
}

#define FL_ROWS 8 /* output rows per task */

static int first_layer(const struct nn_layer *l)
{
    return l->ic == 1 && l->stride == 2 && l->k == 3;
}

static size_t first_row_len(const struct nn_layer *l)
{
    return round_up((size_t)l->ow + 1, 16) + 16;
}

/* Per worker: the padded input row, and the even and odd samples of 2 FL_ROWS + 1 rows. */
static size_t first_scratch_len(const struct nn_layer *l)
{
    return round_up(2 * (size_t)l->ow + 2 + (size_t)l->iw + 2 * (size_t)l->pad, 16) +
           2 * (2 * FL_ROWS + 1) * first_row_len(l);
}

size_t nn_direct_ws_len(const struct nn_layer *l, int batch)
{
    struct dgeo gi = fwd_geo(l, batch), gd;
    size_t fwd, bwd, wpk = nn_conv_pack_len(l), ic8 = round_up((size_t)l->ic, DC_MR);
    /* forward: packed weights, the input planes, the output rows */
    fwd = wpk + (size_t)l->ic * gi.nph * gi.cs + round_up((size_t)l->oc, DC_MR) * gi.q;
    /* backward: the input planes, dy on the forward grid, flipped weights, dy padded, and the
     * input gradient on dy's grid (stride 2: two phase planes of it) */
    if (l->stride == 1)
        gd = bwd_geo(l, batch);
    else
        gd = geo(l->oh, l->ow, 1, 1, batch, l->oh + 1, l->ow + 1);
    bwd = (size_t)l->ic * gi.nph * gi.cs + (size_t)l->oc * gi.cs + ic8 * l->oc * 9 +
          (size_t)l->oc * gd.cs + (l->stride == 1 ? 1 : 2) * ic8 * gd.q;
    if (first_layer(l) && fwd < NN_MAX_THREADS * first_scratch_len(l))
        fwd = NN_MAX_THREADS * first_scratch_len(l);
    return (fwd > bwd ? fwd : bwd) + 8 * DC_ALIGN;
}

/* A pool task built from one always-inline body(job, task, worker) three times, for AVX-512,
 * for AVX2 and for the baseline, and name(arg, task, worker) running the one for the kernel in
 * use: plain C loops that the compiler vectorises for each instruction set. */
#define DC_PER_KERNEL(name, jtype, body)                                                      \
    __attribute__((target("avx2,fma"))) static void name##_avx2(const jtype *j, int t, int w)  \
    {                                                                                       \
        body(j, t, w);                                                                      \
    }                                                                                       \
    __attribute__((target("avx512f,fma"))) static void name##_avx512(const jtype *j, int t,    \
                                                                     int w)                 \
    {                                                                                       \
        body(j, t, w);                                                                      \
    }                                                                                       \
    static void name(void *arg, int t, int w)                                               \
    {                                                                                       \
        const jtype *j = arg;                                                               \
        switch (nn_kernel()) {                                                              \
        case NN_KERNEL_AVX512:                                                              \
            name##_avx512(j, t, w);                                                         \
            break;                                                                          \
        case NN_KERNEL_AVX2:                                                                \
            name##_avx2(j, t, w);                                                           \
            break;                                                                          \
        default:                                                                            \
            body(j, t, w);                                                                  \
        }                                                                                   \
    }

/* ---- copies in and out of the flat layout, one task per channel ---- */


static __mmask16 first_n(int n) /* the mask of the first n (0..16) lanes */
{
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n > 0 ? n : 0)) - 1u);
}

/* ev[m] = s[2m], od[m] = s[2m + 1]: a row of w floats split into its even and odd samples. */
__attribute__((target("avx512f"))) static void deinterleave(const float *s, int w, float *ev,
                                                            float *od)
{
    const __m512i ie = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i io = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    int m = 0;
    for (; 2 * m + 32 <= w; m += 16) {
        const __m512 a = _mm512_loadu_ps(s + 2 * m), b = _mm512_loadu_ps(s + 2 * m + 16);
        _mm512_storeu_ps(ev + m, _mm512_permutex2var_ps(a, ie, b));
        _mm512_storeu_ps(od + m, _mm512_permutex2var_ps(a, io, b));
    }
    if (2 * m < w) { /* the last r < 32 floats, masked */
        const int r = w - 2 * m;
        const __m512 a = _mm512_maskz_loadu_ps(first_n(r), s + 2 * m);
        const __m512 b = _mm512_maskz_loadu_ps(first_n(r - 16), s + 2 * m + 16);
        _mm512_mask_storeu_ps(ev + m, first_n((r + 1) / 2), _mm512_permutex2var_ps(a, ie, b));
        _mm512_mask_storeu_ps(od + m, first_n(r / 2), _mm512_permutex2var_ps(a, io, b));
    }
}

/* The same without AVX-512. */
static void deinterleave_c(const float *s, int w, float *ev, float *od)
{
    for (int m = 0; 2 * m < w; m++) {
        ev[m] = s[2 * m];
        if (2 * m + 1 < w)
            od[m] = s[2 * m + 1];
    }
}

/* The same on AVX2: 16 floats at a time (two shuffles and two lane permutes), the rest in C. */
__attribute__((target("avx2"))) static void deinterleave2(const float *s, int w, float *ev,
                                                          float *od)
{
    int m = 0;
    for (; 2 * m + 16 <= w; m += 8) {
        const __m256 a = _mm256_loadu_ps(s + 2 * m), b = _mm256_loadu_ps(s + 2 * m + 8);
        /* [a0 a2 b0 b2 | a4 a6 b4 b6] and [a1 a3 b1 b3 | a5 a7 b5 b7], then the middle
         * 64-bit pairs swapped */
        const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
        const __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
        _mm256_storeu_ps(ev + m, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e),
                                                                        _MM_SHUFFLE(3, 1, 2, 0))));
        _mm256_storeu_ps(od + m, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o),
                                                                        _MM_SHUFFLE(3, 1, 2, 0))));
    }
    deinterleave_c(s + 2 * m, w - 2 * m, ev + m, od + m);
}

/* A row split into its even and odd samples on the kernel in use. */
static void split_row(const float *s, int w, float *ev, float *od)
{
    switch (nn_kernel()) {
    case NN_KERNEL_AVX512:
        deinterleave(s, w, ev, od);
        break;
    case NN_KERNEL_AVX2:
        deinterleave2(s, w, ev, od);
        break;
    default:
        deinterleave_c(s, w, ev, od);
    }
}

struct pack_job {
    const float *src;
    float *dst;
    int batch, C, h, w, off, stride, bands, band_rows;
    const struct dgeo *g;
};

/* Stride 1, channel c: dst[c][n * img + (y + off) * wp + x + off] = src[n][c][y][x], and
 * everything else of the channel's plane zero. (Stride 2: plane (c, a * 2 + b) holds the padded
 * input's rows a, a + 2, ... and columns b, b + 2, ...; see pack_s2_task.) */
static void pack_task(void *arg, int c, int worker)
{
    const struct pack_job *j = arg;
    const struct dgeo *g = j->g;
    float *d = j->dst + (size_t)c * g->nph * g->cs;
    /* row by row, writing each float once: the padding around each image (with shared padding
     * only the left column and the top row), the pixels, then the tail */
    const size_t wp = (size_t)g->wp, off = (size_t)j->off, w = (size_t)j->w;
    const size_t right = wp - w - off, below = (size_t)g->hp - off - (size_t)j->h;
    for (int n = 0; n < j->batch; n++) {
        const float *s = j->src + ((size_t)n * j->C + c) * j->h * j->w;
        float *di = d + (size_t)n * g->img;
        memset(di, 0, sizeof(float) * off * wp);
        di += off * wp;
        for (int y = 0; y < j->h; y++, di += wp) {
            memset(di, 0, sizeof(float) * off);
            memcpy(di + off, s + (size_t)y * w, sizeof(float) * w);
            memset(di + off + w, 0, sizeof(float) * right);
        }
        memset(di, 0, sizeof(float) * below * wp);
    }
    memset(d + (size_t)j->batch * g->img, 0, sizeof(float) * (g->cs - j->batch * g->img));
}

/* Stride 2, task (c, n, band): the padded rows py of image n in the band, each written to row
 * py / 2 of phase planes (py % 2, 0) and (py % 2, 1): zeroed, then the input row's even and odd
 * samples. Split by rows as well as channels so that the first layer (one channel, batch 1)
 * is not one task. The last task also zeroes the planes' tails after the last image. */
static void pack_s2_task(void *arg, int task, int worker)
{
    const struct pack_job *j = arg;
    const struct dgeo *g = j->g;
    const int band = task % j->bands, n = task / j->bands % j->batch,
              c = task / j->bands / j->batch;
    const int r0 = band * j->band_rows, r1 = r0 + j->band_rows < 2 * g->hp
                                                 ? r0 + j->band_rows
                                                 : 2 * g->hp;
    const int be = j->off % 2, bo = (j->off + 1) % 2;
    float *d = j->dst + (size_t)c * g->nph * g->cs;
    const float *s = j->src + ((size_t)n * j->C + c) * j->h * j->w;
    for (int py = r0; py < r1; py++) {
        const int a = py % 2, y = py - j->off;
        float *row = d + (size_t)n * g->img + (size_t)(py / 2) * g->wp;
        float *pe = row + (size_t)(a * 2 + be) * g->cs, *po = row + (size_t)(a * 2 + bo) * g->cs;
        memset(row + (size_t)(a * 2) * g->cs, 0, sizeof(float) * g->wp);
        memset(row + (size_t)(a * 2 + 1) * g->cs, 0, sizeof(float) * g->wp);
        if (y < 0 || y >= j->h)
            continue;
        /* phase b holds x = 2 jj + b - off: the even samples go to phase off % 2 at
         * (off - b) / 2, the odd ones to phase (off + 1) % 2 at (off + 1 - b) / 2 */
        split_row(s + (size_t)y * j->w, j->w, pe + (j->off - be) / 2,
                  po + (j->off + 1 - bo) / 2);
    }
    if (n == j->batch - 1 && band == j->bands - 1)
        for (int ph = 0; ph < g->nph; ph++)
            memset(d + (size_t)ph * g->cs + (size_t)j->batch * g->img, 0,
                   sizeof(float) * (g->cs - (size_t)j->batch * g->img));
}

static void pack(const float *src, int batch, int C, int h, int w, const struct dgeo *g,
                 int off, int stride, float *dst)
{
    struct pack_job j = {src, dst, batch, C, h, w, off, stride, 1, 2 * g->hp, g};
    if (stride == 1) {
        nn_parallel(pack_task, &j, C);
        return;
    }
    /* at least 8 tasks (of at least 8 rows) when channels x images are fewer */
    if (C * batch < 8) {
        j.bands = (8 + C * batch - 1) / (C * batch);
        j.band_rows = (2 * g->hp + j.bands - 1) / j.bands;
        if (j.band_rows < 8)
            j.band_rows = 8;
        j.bands = (2 * g->hp + j.band_rows - 1) / j.band_rows;
    }
    nn_parallel(pack_s2_task, &j, C * batch * j.bands);
}

struct unpack_job {
    const float *out;
    float *dst;
    size_t os;
    int batch, C, h, w;
    const struct dgeo *g;
};

/* dst[n][c][y][x] = out[c * os + n * img + y * wp + x] for the valid h x w outputs. */
static void unpack_task(void *arg, int c, int worker)
{
    const struct unpack_job *j = arg;
    for (int n = 0; n < j->batch; n++) {
        const float *s = j->out + (size_t)c * j->os + (size_t)n * j->g->img;
        float *d = j->dst + ((size_t)n * j->C + c) * j->h * j->w;
        for (int y = 0; y < j->h; y++)
            memcpy(d + (size_t)y * j->w, s + (size_t)y * j->g->wp, sizeof(float) * j->w);
    }
}

static void unpack(const float *out, size_t os, int batch, int C, int h, int w,
                   const struct dgeo *g, float *dst)
{
    struct unpack_job j = {out, dst, os, batch, C, h, w, g};
    nn_parallel(unpack_task, &j, C);
}

/* wpk[ob][c][ph][t][8] = w[ob * 8 + o][c][kidx[ph][t]] (0 for o beyond oc), the order in which
 * dconv_rows reads them. */
static void pack_weights(const struct nn_layer *l, const struct dgeo *g, const float *w,
                         float *wpk)
{
    const int ic = l->ic, oc = l->oc;
    for (int ob = 0; ob < oc; ob += DC_MR)
        for (int c = 0; c < ic; c++)
            for (int ph = 0; ph < g->nph; ph++)
                for (int t = 0; t < g->ntap[ph]; t++)
                    for (int o = 0; o < DC_MR; o++)
                        *wpk++ = ob + o < oc ? w[((size_t)(ob + o) * ic + c) * 9 + g->kidx[ph][t]]
                                             : 0.0f;
}

void nn_conv_pack(const struct nn_layer *l, const float *w, float *wpk)
{
    struct dgeo g = fwd_geo(l, 1);
    pack_weights(l, &g, w, wpk);
}

/* The input-gradient weights, packed: wf[cb][o][t][8] = w[o][cb * 8 + j][8 - t]. */
static void pack_flipped(const struct nn_layer *l, const float *w, float *wf)
{
    const int ic = l->ic, oc = l->oc;
    for (int cb = 0; cb < ic; cb += DC_MR)
        for (int o = 0; o < oc; o++)
            for (int t = 0; t < 9; t++)
                for (int j = 0; j < DC_MR; j++)
                    *wf++ = cb + j < ic ? w[((size_t)o * ic + cb + j) * 9 + (8 - t)] : 0.0f;
}

/* ---- the convolution kernel ---- */

/*
 * One tile: out[ob .. ob + mr - 1][q .. q + 16 nv - 1], nv vectors of 16 positions (3, or
 * fewer for the last tile before the end of the valid positions).
 */
__attribute__((target("avx512f,fma"))) static inline __attribute__((always_inline)) void
dtile(const float *xp, const struct dgeo *g, int cin, const float *wb, const float *bias,
      float *out, size_t os, size_t q, int ob, int mr, int relu, const int nv, const int kt)
{
    __m512 acc[DC_MR][DC_NV];
#pragma GCC unroll 8
    for (int o = 0; o < DC_MR; o++) {
        __m512 b = _mm512_set1_ps(bias && o < mr ? bias[ob + o] : 0.0f);
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++)
            acc[o][v] = b;
    }
    for (int c = 0; c < cin; c++) {
        const float *xc = xp + (size_t)c * g->chs + q;
#pragma GCC unroll 9
        for (int t = 0; t < kt; t++, wb += DC_MR) {
            const float *xx = xc + g->tb[t];
            __m512 x[DC_NV];
#pragma GCC unroll 8
            for (int v = 0; v < nv; v++)
                x[v] = _mm512_loadu_ps(xx + 16 * v);
#pragma GCC unroll 8
            for (int o = 0; o < DC_MR; o++) {
                const __m512 wv = _mm512_set1_ps(wb[o]);
#pragma GCC unroll 8
                for (int v = 0; v < nv; v++)
                    acc[o][v] = _mm512_fmadd_ps(wv, x[v], acc[o][v]);
            }
        }
    }
#pragma GCC unroll 8
    for (int o = 0; o < DC_MR; o++) {
        if (o >= mr)
            break;
        float *r = out + (size_t)(ob + o) * os + q;
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++)
            _mm512_storeu_ps(r + 16 * v,
                             relu ? _mm512_max_ps(acc[o][v], _mm512_setzero_ps()) : acc[o][v]);
    }
}

/*
 * out[o][q] for q in [q0, q1) (multiples of DC_NR) and o in [ob0, ob1) (multiples of DC_MR, or
 * the end): the sum over cin channels of xp's planes and their taps; bias (may be NULL) and an
 * optional ReLU applied. Positions past the last valid one (g->qv) are not computed.
 */
__attribute__((target("avx512f,fma"))) static void
dconv_rows(const float *xp, const struct dgeo *g, int cin, const float *wpk, const float *bias,
           int oc, float *out, size_t os, size_t q0, size_t q1, int ob0, int ob1, int relu)
{
    for (size_t qb = q0; qb < q1; qb += DC_QB) {
        const size_t qe = qb + DC_QB < q1 ? qb + DC_QB : q1;
        for (int ob = ob0; ob < ob1; ob += DC_MR) {
            const float *wb = wpk + (size_t)ob * cin * g->ktot;
            const int mr = oc - ob < DC_MR ? oc - ob : DC_MR;
            for (size_t q = qb; q < qe; q += DC_NR) {
                const size_t left = g->qv > q ? g->qv - q : 0;
                const int nv = left >= DC_NR ? DC_NV : (int)((left + 15) / 16);
                switch (nv) {
#define DC_CASE(n)                                                                           \
    case n:                                                                                  \
        if (g->ktot == 9) /* the taps of a whole 3x3 kernel: unrolled */                    \
            dtile(xp, g, cin, wb, bias, out, os, q, ob, mr, relu, n, 9);                     \
        else if (g->ktot == 1) /* Winograd's products */                                    \
            dtile(xp, g, cin, wb, bias, out, os, q, ob, mr, relu, n, 1);                     \
        else                                                                                 \
            dtile(xp, g, cin, wb, bias, out, os, q, ob, mr, relu, n, g->ktot);               \
        break;
                    DC_CASE(1)
                    DC_CASE(2)
                    DC_CASE(3)
                    DC_CASE(4)
                    DC_CASE(5)
                    DC_CASE(6)
#undef DC_CASE
                default:
                    break;
                }
            }
        }
    }
}

/* ---- the same on AVX2 + FMA: 16 ymm registers, so 4 output channels x 3 vectors of 8
 * positions (12 accumulators, 3 loads, 1 broadcast: 4 broadcasts and 3 loads per 12 FMAs) ---- */
#ifndef D2_NV
#define D2_NV 3
#endif
#define D2_NR (8 * D2_NV)
_Static_assert(DC_NR % D2_NR == 0, "AVX2 tiles must cover the AVX-512 tile");

__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline)) void
dtile2(const float *xp, const struct dgeo *g, int cin, const float *wb, const float *bias,
       float *out, size_t os, size_t q, int ob, int mr, int relu, const int nv, const int kt)
{
    __m256 acc[DC_MR][D2_NV];
#pragma GCC unroll 4
    for (int o = 0; o < DC_MR; o++) {
        __m256 b = _mm256_set1_ps(bias && o < mr ? bias[ob + o] : 0.0f);
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++)
            acc[o][v] = b;
    }
    for (int c = 0; c < cin; c++) {
        const float *xc = xp + (size_t)c * g->chs + q;
#pragma GCC unroll 9
        for (int t = 0; t < kt; t++, wb += DC_MR) {
            const float *xx = xc + g->tb[t];
            __m256 x[D2_NV];
#pragma GCC unroll 3
            for (int v = 0; v < nv; v++)
                x[v] = _mm256_loadu_ps(xx + 8 * v);
#pragma GCC unroll 4
            for (int o = 0; o < DC_MR; o++) {
                const __m256 wv = _mm256_broadcast_ss(wb + o);
#pragma GCC unroll 3
                for (int v = 0; v < nv; v++)
                    acc[o][v] = _mm256_fmadd_ps(wv, x[v], acc[o][v]);
            }
        }
    }
#pragma GCC unroll 4
    for (int o = 0; o < DC_MR; o++) {
        if (o >= mr)
            break;
        float *r = out + (size_t)(ob + o) * os + q;
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++)
            _mm256_storeu_ps(r + 8 * v,
                             relu ? _mm256_max_ps(acc[o][v], _mm256_setzero_ps()) : acc[o][v]);
    }
}

/* dconv_rows on AVX2 (same contract). */
__attribute__((target("avx2,fma"))) static void
dconv_rows2(const float *xp, const struct dgeo *g, int cin, const float *wpk, const float *bias,
            int oc, float *out, size_t os, size_t q0, size_t q1, int ob0, int ob1, int relu)
{
    for (size_t qb = q0; qb < q1; qb += DC_QB) {
        const size_t qe = qb + DC_QB < q1 ? qb + DC_QB : q1;
        for (int ob = ob0; ob < ob1; ob += DC_MR) {
            const float *wb = wpk + (size_t)ob * cin * g->ktot;
            const int mr = oc - ob < DC_MR ? oc - ob : DC_MR;
            for (size_t q = qb; q < qe; q += D2_NR) {
                const size_t left = g->qv > q ? g->qv - q : 0;
                const int nv = left >= D2_NR ? D2_NV : (int)((left + 7) / 8);
                switch (nv) {
#define D2_CASE(n)                                                                           \
    case n:                                                                                  \
        if (g->ktot == 9)                                                                    \
            dtile2(xp, g, cin, wb, bias, out, os, q, ob, mr, relu, n, 9);                    \
        else if (g->ktot == 1) /* Winograd's products */                                    \
            dtile2(xp, g, cin, wb, bias, out, os, q, ob, mr, relu, n, 1);                    \
        else                                                                                 \
            dtile2(xp, g, cin, wb, bias, out, os, q, ob, mr, relu, n, g->ktot);              \
        break;
                    D2_CASE(1)
                    D2_CASE(2)
#if D2_NV >= 3
                    D2_CASE(3)
#endif
#if D2_NV >= 4
                    D2_CASE(4)
#endif
#undef D2_CASE
                default:
                    break;
                }
            }
        }
    }
}

/* ---- the same in plain C (CPUs with neither): 4 output channels x 16 positions, which the
 * compiler vectorises for the baseline instruction set ---- */
#define DG_NR 16

static void dconv_rows_c(const float *xp, const struct dgeo *g, int cin, const float *wpk,
                         const float *bias, int oc, float *out, size_t os, size_t q0, size_t q1,
                         int ob0, int ob1, int relu)
{
    for (size_t qb = q0; qb < q1; qb += DC_QB) {
        const size_t qe = qb + DC_QB < q1 ? qb + DC_QB : q1;
        for (int ob = ob0; ob < ob1; ob += DC_MR) {
            const int mr = oc - ob < DC_MR ? oc - ob : DC_MR;
            for (size_t q = qb; q < qe && q < g->qv; q += DG_NR) {
                const float *wb = wpk + (size_t)ob * cin * g->ktot;
                float acc[DC_MR][DG_NR];
                for (int o = 0; o < DC_MR; o++) {
                    const float b = bias && o < mr ? bias[ob + o] : 0.0f;
                    for (int v = 0; v < DG_NR; v++)
                        acc[o][v] = b;
                }
                for (int c = 0; c < cin; c++) {
                    const float *xc = xp + (size_t)c * g->chs + q;
                    for (int t = 0; t < g->ktot; t++, wb += DC_MR) {
                        const float *xx = xc + g->tb[t];
                        for (int o = 0; o < DC_MR; o++) {
                            const float wv = wb[o];
#pragma omp simd
                            for (int v = 0; v < DG_NR; v++)
                                acc[o][v] += wv * xx[v];
                        }
                    }
                }
                for (int o = 0; o < mr; o++) {
                    float *r = out + (size_t)(ob + o) * os + q;
                    for (int v = 0; v < DG_NR; v++)
                        r[v] = relu && acc[o][v] < 0.0f ? 0.0f : acc[o][v];
                }
            }
        }
    }
}

struct rows_job {
    const float *xp, *wpk, *bias;
    const struct dgeo *g;
    float *out;
    int cin, oc, relu, nob; /* nob: output-channel groups per position block */
    size_t os;
};

static void rows_task(void *arg, int task, int worker)
{
    const struct rows_job *j = arg;
    const int qi = task / j->nob, oi = task % j->nob;
    const int nblk = (j->oc + DC_MR - 1) / DC_MR, per = (nblk + j->nob - 1) / j->nob;
    const int ob0 = oi * per * DC_MR, ob1 = (oi + 1) * per * DC_MR < j->oc
                                                ? (oi + 1) * per * DC_MR
                                                : j->oc;
    const size_t q0 = (size_t)qi * DC_QB, q1 = q0 + DC_QB < j->g->q ? q0 + DC_QB : j->g->q;
    if (ob0 >= ob1)
        return;
    switch (nn_kernel()) {
    case NN_KERNEL_AVX512:
        dconv_rows(j->xp, j->g, j->cin, j->wpk, j->bias, j->oc, j->out, j->os, q0, q1, ob0, ob1,
                   j->relu);
        break;
    case NN_KERNEL_AVX2:
        dconv_rows2(j->xp, j->g, j->cin, j->wpk, j->bias, j->oc, j->out, j->os, q0, q1, ob0,
                    ob1, j->relu);
        break;
    default:
        dconv_rows_c(j->xp, j->g, j->cin, j->wpk, j->bias, j->oc, j->out, j->os, q0, q1, ob0,
                     ob1, j->relu);
    }
}

/* Tasks: one per block of DC_QB positions; when there are few blocks (batch 1, small images),
 * each block's output channels are split too, so that every thread has work. */
static void conv_rows(const float *xp, const struct dgeo *g, int cin, const float *wpk,
                      const float *bias, int oc, float *out, int relu)
{
    const int nq = (int)((g->q + DC_QB - 1) / DC_QB), threads = nn_get_threads();
    const int nblk = (oc + DC_MR - 1) / DC_MR;
    struct rows_job j = {xp, wpk, bias, g, out, cin, oc, relu, 1, g->q};
    if (threads > 1 && nq < 4 * threads)
        j.nob = nblk < 4 ? nblk : 4;
    nn_parallel(rows_task, &j, nq * j.nob);
}

/* ---- the weight gradient ---- */

/*
 * dw[o][c][t] += sum_{q in [q0, q1)} dq[o][q] * xp[c * chs + tb[t] + q] for the 9 taps (tb: the
 * tap's plane and offset), output channels o .. o + mr - 1 (mr 1..3: 27 accumulators at most).
 */
__attribute__((target("avx512f,fma"))) static inline __attribute__((always_inline)) void
dw_tile(const float *dq, size_t ds, const float *xp, size_t chs, int cin, const size_t *tb,
        float *dw, int o, size_t q0, size_t q1, const int mr)
{
    for (int c = 0; c < cin; c++) {
        __m512 acc[3][9];
        const float *xc = xp + (size_t)c * chs;
#pragma GCC unroll 3
        for (int i = 0; i < mr; i++)
#pragma GCC unroll 9
            for (int t = 0; t < 9; t++)
                acc[i][t] = _mm512_setzero_ps();
        for (size_t q = q0; q < q1; q += 16) {
            __m512 d[3];
#pragma GCC unroll 3
            for (int i = 0; i < mr; i++)
                d[i] = _mm512_loadu_ps(dq + (size_t)(o + i) * ds + q);
#pragma GCC unroll 9
            for (int t = 0; t < 9; t++) {
                __m512 v = _mm512_loadu_ps(xc + tb[t] + q);
                /* keep v in a register: folded into each FMA it would be loaded mr times */
                __asm__("" : "+v"(v));
#pragma GCC unroll 3
                for (int i = 0; i < mr; i++)
                    acc[i][t] = _mm512_fmadd_ps(d[i], v, acc[i][t]);
            }
        }
#pragma GCC unroll 3
        for (int i = 0; i < mr; i++) {
            float *r = dw + ((size_t)(o + i) * cin + c) * 9;
#pragma GCC unroll 9
            for (int t = 0; t < 9; t++)
                r[t] += _mm512_reduce_add_ps(acc[i][t]);
        }
    }
}

/* The same on AVX2, where 27 accumulators do not fit in 16 ymm registers: one kernel row at a
 * time (3 output channels x 3 taps = 9 accumulators, 3 dy loads and 3 input loads per 9 FMAs),
 * the block of dy and of the channel's input staying in L1 for the next row. */
__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline)) void
dw_tile2(const float *dq, size_t ds, const float *xp, size_t chs, int cin, const size_t *tb,
         float *dw, int o, size_t q0, size_t q1, const int mr)
{
    for (int c = 0; c < cin; c++) {
        const float *xc = xp + (size_t)c * chs;
        for (int ky = 0; ky < 3; ky++) {
            const float *x0 = xc + tb[3 * ky], *x1 = xc + tb[3 * ky + 1],
                        *x2 = xc + tb[3 * ky + 2];
            __m256 acc[3][3];
#pragma GCC unroll 3
            for (int i = 0; i < mr; i++)
#pragma GCC unroll 3
                for (int t = 0; t < 3; t++)
                    acc[i][t] = _mm256_setzero_ps();
            for (size_t q = q0; q < q1; q += 8) {
                __m256 d[3];
#pragma GCC unroll 3
                for (int i = 0; i < mr; i++)
                    d[i] = _mm256_loadu_ps(dq + (size_t)(o + i) * ds + q);
                const __m256 v0 = _mm256_loadu_ps(x0 + q), v1 = _mm256_loadu_ps(x1 + q),
                             v2 = _mm256_loadu_ps(x2 + q);
#pragma GCC unroll 3
                for (int i = 0; i < mr; i++) {
                    acc[i][0] = _mm256_fmadd_ps(d[i], v0, acc[i][0]);
                    acc[i][1] = _mm256_fmadd_ps(d[i], v1, acc[i][1]);
                    acc[i][2] = _mm256_fmadd_ps(d[i], v2, acc[i][2]);
                }
            }
#pragma GCC unroll 3
            for (int i = 0; i < mr; i++) {
                float *r = dw + ((size_t)(o + i) * cin + c) * 9 + 3 * ky;
#pragma GCC unroll 3
                for (int t = 0; t < 3; t++) {
                    const __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc[i][t]),
                                                _mm256_extractf128_ps(acc[i][t], 1));
                    const __m128 h2 = _mm_add_ps(h, _mm_movehl_ps(h, h));
                    r[t] += _mm_cvtss_f32(_mm_add_ss(h2, _mm_shuffle_ps(h2, h2, 1)));
                }
            }
        }
    }
}

/* dw_tile2 for one triple (mr = 1..3). */
__attribute__((target("avx2,fma"))) static void dw_tile256(const float *dq, size_t ds,
                                                           const float *xp, size_t chs,
                                                           int cin, const size_t *tb,
                                                           float *dw, int o, size_t q0,
                                                           size_t q1, int mr)
{
    if (mr == 3)
        dw_tile2(dq, ds, xp, chs, cin, tb, dw, o, q0, q1, 3);
    else if (mr == 2)
        dw_tile2(dq, ds, xp, chs, cin, tb, dw, o, q0, q1, 2);
    else
        dw_tile2(dq, ds, xp, chs, cin, tb, dw, o, q0, q1, 1);
}

/* The same in plain C. */
static void dw_tile_c(const float *dq, size_t ds, const float *xp, size_t chs, int cin,
                      const size_t *tb, float *dw, int o, size_t q0, size_t q1, int mr)
{
    for (int c = 0; c < cin; c++) {
        const float *xc = xp + (size_t)c * chs;
        for (int i = 0; i < mr; i++) {
            const float *d = dq + (size_t)(o + i) * ds;
            float *r = dw + ((size_t)(o + i) * cin + c) * 9;
            for (int t = 0; t < 9; t++) {
                const float *xt = xc + tb[t];
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (size_t q = q0; q < q1; q++)
                    acc += d[q] * xt[q];
                r[t] += acc;
            }
        }
    }
}

struct dw_job {
    const float *dq, *xp;
    size_t ds, chs, q, tb[9];
    float *dw;
    int cin, oc, ngroups;
    enum nn_kernel kernel;
};

/* Task: one group of output-channel triples (as many groups as threads), over every position.
 * The positions are the outer loop, so one block of the input planes stays in L2 while every
 * triple of the group uses it; with the triples outside, the whole input (13 MB for compact's
 * 56 x 56 layer at batch 32) would stream from memory once per triple. */
/* dw_tile for one triple (mr = 1..3) on AVX-512. */
__attribute__((target("avx512f,fma"))) static void dw_tile512(const float *dq, size_t ds,
                                                              const float *xp, size_t chs,
                                                              int cin, const size_t *tb,
                                                              float *dw, int o, size_t q0,
                                                              size_t q1, int mr)
{
    if (mr == 3)
        dw_tile(dq, ds, xp, chs, cin, tb, dw, o, q0, q1, 3);
    else if (mr == 2)
        dw_tile(dq, ds, xp, chs, cin, tb, dw, o, q0, q1, 2);
    else
        dw_tile(dq, ds, xp, chs, cin, tb, dw, o, q0, q1, 1);
}

/* (No target attribute here: this runs on every path, also on CPUs without AVX-512.) */
static void dw_task(void *arg, int task, int worker)
{
    const struct dw_job *j = arg;
    const int ntri = (j->oc + 2) / 3, per = (ntri + j->ngroups - 1) / j->ngroups;
    const int t0 = task * per, t1 = t0 + per < ntri ? t0 + per : ntri;
    for (size_t qb = 0; qb < j->q; qb += DW_QB) {
        const size_t qe = qb + DW_QB < j->q ? qb + DW_QB : j->q;
        for (int tri = t0; tri < t1; tri++) {
            const int o = 3 * tri, mr = j->oc - o < 3 ? j->oc - o : 3;
            if (j->kernel == NN_KERNEL_AVX2)
                dw_tile256(j->dq, j->ds, j->xp, j->chs, j->cin, j->tb, j->dw, o, qb, qe, mr);
            else if (j->kernel == NN_KERNEL_AVX512)
                dw_tile512(j->dq, j->ds, j->xp, j->chs, j->cin, j->tb, j->dw, o, qb, qe, mr);
            else
                dw_tile_c(j->dq, j->ds, j->xp, j->chs, j->cin, j->tb, j->dw, o, qb, qe, mr);
        }
    }
}

/* The weight gradient from xp (the input's planes, geometry g) and dq: dy on the forward
 * output grid (position (y, x) of image n at n * img + y * wp + x, zero elsewhere), ds floats
 * per channel. */
static void weight_grad(const struct nn_layer *l, const struct dgeo *g, const float *xp,
                        const float *dq, size_t ds, float *dw)
{
    const int ntri = (l->oc + 2) / 3, threads = nn_get_threads();
    struct dw_job j = {dq, xp, ds, g->nph * g->cs, g->q, {0}, dw, l->ic, l->oc,
                       threads < ntri ? threads : ntri, nn_kernel()};
    for (int ph = 0; ph < g->nph; ph++)
        for (int t = 0; t < g->ntap[ph]; t++)
            j.tb[g->kidx[ph][t]] = (size_t)ph * g->cs + (size_t)g->toff[ph][t];
    nn_parallel(dw_task, &j, j.ngroups);
}

static float *align_up(float *p)
{
    const size_t mis = (uintptr_t)p & 63; /* whole floats: the workspace is float-aligned */
    return mis ? p + (64 - mis) / sizeof(float) : p;
}

/* ---- the first layer: one input channel, stride 2 ----
 *
 * With one input channel the phase planes and the padded output grid cost more than the
 * products (at 224 x 224 -> 16 x 112 x 112, copying in and out took twice the convolution).
 * Here each task takes a band of output rows of one image: the band's input rows, padded, are
 * split once into their even and odd samples (ev[m] = xpad[2m], od[m] = xpad[2m + 1]), so the
 * three taps of a kernel row read ev[ox], od[ox] and ev[ox + 1], unit-stride; every output row
 * of every channel is then nine multiply-adds per pixel written straight into y. */
struct first_job {
    const struct nn_layer *l;
    const float *w, *b, *x;
    float *y, *scratch;
    int bands, relu;
};

static inline __attribute__((always_inline)) void first_body(const struct first_job *j,
                                                             int task, int worker)
{
    const struct nn_layer *l = j->l;
    const int n = task / j->bands, oy0 = task % j->bands * FL_ROWS;
    const int oy1 = oy0 + FL_ROWS < l->oh ? oy0 + FL_ROWS : l->oh, ow = l->ow, p = l->pad;
    const int W = 2 * ow + 2, nrows = 2 * (oy1 - oy0) + 1;
    const size_t rl = first_row_len(l);
    float *r = j->scratch + (size_t)worker * first_scratch_len(l);
    float *eo = r + round_up(2 * (size_t)ow + 2 + (size_t)l->iw + 2 * (size_t)p, 16);
    const float *xn = j->x + (size_t)n * l->ih * l->iw;
    /* padded input rows 2 oy0 .. 2 oy1 (input row 2 oy - p + ky), split */
    for (int k = 0; k < nrows; k++) {
        const int iy = 2 * oy0 + k - p;
        float *ev = eo + (size_t)(2 * k) * rl, *od = ev + rl;
        if (iy < 0 || iy >= l->ih) {
            memset(ev, 0, sizeof(float) * (size_t)(ow + 1));
            memset(od, 0, sizeof(float) * (size_t)(ow + 1));
            continue;
        }
        {
            const int x1 = p + l->iw < W ? p + l->iw : W; /* r[p, x1): the input row */
            memset(r, 0, sizeof(float) * (size_t)p);
            memcpy(r + p, xn + (size_t)iy * l->iw, sizeof(float) * (size_t)(x1 - p));
            if (x1 < W)
                memset(r + x1, 0, sizeof(float) * (size_t)(W - x1));
        }
        split_row(r, W, ev, od);
    }
    for (int o = 0; o < l->oc; o++) {
        const float *wo = j->w + (size_t)o * 9;
        const float w0 = wo[0], w1 = wo[1], w2 = wo[2], w3 = wo[3], w4 = wo[4], w5 = wo[5],
                    w6 = wo[6], w7 = wo[7], w8 = wo[8];
        const float bias = j->b ? j->b[o] : 0.0f, lo = j->relu ? 0.0f : -INFINITY;
        for (int oy = oy0; oy < oy1; oy++) {
            const float *e0 = eo + (size_t)(2 * (2 * (oy - oy0))) * rl, *o0 = e0 + rl;
            const float *e1 = o0 + rl, *o1 = e1 + rl, *e2 = o1 + rl, *o2 = e2 + rl;
            float *yr = j->y + (((size_t)n * l->oc + o) * l->oh + oy) * ow;
#pragma omp simd
            for (int ox = 0; ox < ow; ox++) {
                /* three short chains of multiply-adds rather than one of nine */
                const float a = bias + w0 * e0[ox] + w1 * o0[ox] + w2 * e0[ox + 1];
                const float c = w3 * e1[ox] + w4 * o1[ox] + w5 * e1[ox + 1];
                const float d = w6 * e2[ox] + w7 * o2[ox] + w8 * e2[ox + 1];
                const float v = a + (c + d);
                yr[ox] = v > lo ? v : lo;
            }
        }
    }
}

DC_PER_KERNEL(first_task, struct first_job, first_body)

void nn_direct_forward(const struct nn_layer *l, const float *wpk, const float *w,
                       const float *b, const float *x, float *y, int batch, float *ws, int relu)
{
    struct dgeo g = fwd_geo(l, batch);
    if (first_layer(l) && w) {
        const int bands = (l->oh + FL_ROWS - 1) / FL_ROWS;
        struct first_job j = {l, w, b, x, y, align_up(ws), bands, relu};
        nn_parallel(first_task, &j, batch * bands);
        return;
    }
    float *p = align_up(ws), *xp, *out;
    if (!wpk) {
        pack_weights(l, &g, w, p);
        wpk = p;
        p = align_up(p + nn_conv_pack_len(l));
    }
    xp = p;
    out = align_up(xp + (size_t)l->ic * g.nph * g.cs);
    pack(x, batch, l->ic, l->ih, l->iw, &g, l->pad, l->stride, xp);
    conv_rows(xp, &g, l->ic, wpk, b, l->oc, out, relu);
    unpack(out, g.q, batch, l->oc, l->oh, l->ow, &g, y);
}

/* dst[2m] = ev[m], dst[2m + 1] = od[m] for the w floats of dst: the inverse of deinterleave. */
__attribute__((target("avx512f"))) static void interleave(const float *ev, const float *od, int w,
                                                          float *dst)
{
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    int m = 0;
    for (; 2 * m + 32 <= w; m += 16) {
        const __m512 e = _mm512_loadu_ps(ev + m), o = _mm512_loadu_ps(od + m);
        _mm512_storeu_ps(dst + 2 * m, _mm512_permutex2var_ps(e, lo, o));
        _mm512_storeu_ps(dst + 2 * m + 16, _mm512_permutex2var_ps(e, hi, o));
    }
    if (2 * m < w) { /* the last r < 32 floats, masked */
        const int r = w - 2 * m;
        const __m512 e = _mm512_maskz_loadu_ps(first_n((r + 1) / 2), ev + m);
        const __m512 o = _mm512_maskz_loadu_ps(first_n(r / 2), od + m);
        _mm512_mask_storeu_ps(dst + 2 * m, first_n(r), _mm512_permutex2var_ps(e, lo, o));
        _mm512_mask_storeu_ps(dst + 2 * m + 16, first_n(r - 16),
                              _mm512_permutex2var_ps(e, hi, o));
    }
}

static void interleave_c(const float *ev, const float *od, int w, float *dst)
{
    int m = 0;
    for (; 2 * m + 1 < w; m++) {
        dst[2 * m] = ev[m];
        dst[2 * m + 1] = od[m];
    }
    if (2 * m < w)
        dst[2 * m] = ev[m];
}

/* The same on AVX2: 16 floats at a time, the rest in C. */
__attribute__((target("avx2"))) static void interleave2(const float *ev, const float *od, int w,
                                                        float *dst)
{
    int m = 0;
    for (; 2 * m + 16 <= w; m += 8) {
        const __m256 e = _mm256_loadu_ps(ev + m), o = _mm256_loadu_ps(od + m);
        const __m256 lo = _mm256_unpacklo_ps(e, o), hi = _mm256_unpackhi_ps(e, o);
        _mm256_storeu_ps(dst + 2 * m, _mm256_permute2f128_ps(lo, hi, 0x20));
        _mm256_storeu_ps(dst + 2 * m + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
    }
    interleave_c(ev + m, od + m, w - 2 * m, dst + 2 * m);
}

/* dst woven from ev and od on the kernel in use. */
static void weave_row(const float *ev, const float *od, int w, float *dst)
{
    switch (nn_kernel()) {
    case NN_KERNEL_AVX512:
        interleave(ev, od, w, dst);
        break;
    case NN_KERNEL_AVX2:
        interleave2(ev, od, w, dst);
        break;
    default:
        interleave_c(ev, od, w, dst);
    }
}

/*
 * Stride 2, input gradient. With py = 2i + a the padded input row, tap ky reaches it from
 * output row i - ky / 2 when ky % 2 == a; so phase (a, b) of the padded input gradient is a
 * stride-1 correlation of dy (one zero row and column before it) with the taps of that phase,
 * flipped: dxp_ab[c][i][j] = sum_o sum_taps w[o][c][ky][kx] dy[o][i - ky / 2][j - kx / 2].
 * The four phase planes sit on dy's grid with its padding, (oh + 1) x (ow + 1) per image;
 * phases (a, 0) and (a, 1) are computed together and woven into dx's rows of parity a.
 */
struct weave_job {
    const float *p0, *p1; /* the phase planes b = 0 and b = 1 of row parity a */
    float *dx;
    const struct dgeo *g;
    int batch, C, h, w, pad, a;
};

static void weave_task(void *arg, int c, int worker)
{
    const struct weave_job *j = arg;
    const struct dgeo *g = j->g;
    /* dx[x] = P_b[(x + pad) / 2] with b = (x + pad) % 2: even x from P_{pad % 2} at
     * m + pad / 2, odd x from P_{(pad + 1) % 2} at m + (pad + 1) / 2 */
    const float *pe = j->pad % 2 ? j->p1 : j->p0, *po = j->pad % 2 ? j->p0 : j->p1;
    const int se = j->pad / 2, so = (j->pad + 1) / 2;
    for (int n = 0; n < j->batch; n++)
        for (int y = 0; y < j->h; y++) {
            const int py = y + j->pad;
            if (py % 2 != j->a)
                continue;
            const size_t row = (size_t)c * g->q + (size_t)n * g->img + (size_t)(py / 2) * g->wp;
            float *d = j->dx + (((size_t)n * j->C + c) * j->h + y) * j->w;
            weave_row(pe + row + se, po + row + so, j->w, d);
        }
}

static void input_grad_s2(const struct nn_layer *l, const float *w, const float *dy, float *dx,
                          int batch, float *dyp, float *wf, float *out)
{
    struct dgeo gd = geo(l->oh, l->ow, 1, 1, batch, l->oh + 1, l->ow + 1);
    const size_t plane = round_up((size_t)l->ic, DC_MR) * gd.q;
    pack(dy, batch, l->oc, l->oh, l->ow, &gd, 1, 1, dyp);
    for (int a = 0; a < 2; a++) {
        for (int b = 0; b < 2; b++) {
            struct dgeo gp = gd;
            float *wp = wf;
            gp.ntap[0] = 0;
            for (int ky = a; ky < 3; ky += 2)
                for (int kx = b; kx < 3; kx += 2)
                    gp.toff[0][gp.ntap[0]++] = (1 - ky / 2) * gd.wp + (1 - kx / 2);
            set_taps(&gp);
            /* wf[cb][o][t][8] = w[o][cb + j][tap t of this phase] */
            for (int cb = 0; cb < l->ic; cb += DC_MR)
                for (int o = 0; o < l->oc; o++)
                    for (int ky = a; ky < 3; ky += 2)
                        for (int kx = b; kx < 3; kx += 2)
                            for (int jj = 0; jj < DC_MR; jj++)
                                *wp++ = cb + jj < l->ic
                                            ? w[((size_t)o * l->ic + cb + jj) * 9 + ky * 3 + kx]
                                            : 0.0f;
            conv_rows(dyp, &gp, l->oc, wf, NULL, l->ic, out + b * plane, 0);
        }
        struct weave_job j = {out, out + plane, dx, &gd, batch, l->ic, l->ih, l->iw, l->pad, a};
        nn_parallel(weave_task, &j, l->ic);
    }
}

void nn_direct_backward(const struct nn_layer *l, const float *w, const float *x,
                        const float *dy, float *dw, float *dx, int batch, float *ws)
{
    struct dgeo g = fwd_geo(l, batch), g1 = g;
    float *xp, *dq, *wf, *dyp, *out;
    xp = align_up(ws);
    dq = align_up(xp + (size_t)l->ic * g.nph * g.cs);
    wf = align_up(dq + (size_t)l->oc * g.cs);
    g1.nph = 1;
    if (l->stride == 2) {
        struct dgeo gd = geo(l->oh, l->ow, 1, 1, batch, l->oh + 1, l->ow + 1);
        if (dw) {
            pack(x, batch, l->ic, l->ih, l->iw, &g, l->pad, 2, xp);
            pack(dy, batch, l->oc, l->oh, l->ow, &g1, 0, 1, dq);
            weight_grad(l, &g, xp, dq, g.cs, dw);
        }
        if (dx) {
            dyp = align_up(wf + round_up((size_t)l->ic, DC_MR) * l->oc * 4);
            out = align_up(dyp + (size_t)l->oc * gd.cs);
            input_grad_s2(l, w, dy, dx, batch, dyp, wf, out);
        }
        return;
    }
    {
        struct dgeo gd = bwd_geo(l, batch);
        dyp = align_up(wf + round_up((size_t)l->ic, DC_MR) * l->oc * 9);
        out = align_up(dyp + (size_t)l->oc * gd.cs);
        /* dy padded by 2 - p for the input gradient; with p = 1 both grids are the same shared
         * layout and dy on the forward grid is the same copy, wp + 1 floats on */
        if (dx || l->pad == 1)
            pack(dy, batch, l->oc, l->oh, l->ow, &gd, l->k - 1 - l->pad, 1, dyp);
        if (dw) {
            pack(x, batch, l->ic, l->ih, l->iw, &g, l->pad, 1, xp);
            if (l->pad == 1) {
                weight_grad(l, &g, xp, dyp + gd.wp + 1, gd.cs, dw);
            } else {
                pack(dy, batch, l->oc, l->oh, l->ow, &g1, 0, 1, dq);
                weight_grad(l, &g, xp, dq, g.cs, dw);
            }
        }
        if (dx) {
            pack_flipped(l, w, wf);
            conv_rows(dyp, &gd, l->oc, wf, NULL, l->ic, out, 0);
            unpack(out, gd.q, batch, l->ic, l->ih, l->iw, &gd, dx);
        }
    }
}

/* ---- Winograd F(2x2, 3x3) for inference's stride-1 layers ----
 *
 * Each 2 x 2 block of outputs ("tile") comes from a 4 x 4 patch d of the input: Y = A^T [(G g
 * G^T) .* (B^T d B)] A. With the 16 transformed positions xi of the patch as separate planes,
 * the element-wise product summed over input channels is 16 matrix products,
 * M[xi][o][tile] = sum_c U[xi][o][c] V[xi][c][tile], which are exactly the direct kernel's
 * tile loop with a single tap (one "channel plane" per input channel, positions = tiles): 16 *
 * 2 * oc * ic multiply-adds per tile instead of 9 * 4 * 2, 2.25x fewer, plus the transforms
 * (per tile and channel, ~32 additions in and ~24 out). Rounding differs from the direct sum
 * by a few units in the last place of the largest terms (the tests allow 1e-4 of the scale).
 * Inference packs U once (nn_ctx); training transforms the weights on every call and also
 * runs the input gradient this way (the forward of the transposed layer); its weight gradient
 * stays direct. Which layers: nn_conv_is_winograd (stride 1, 8+ channels in and out, on the
 * direct kernels).
 */
#define WG_T 16 /* transformed positions per tile */

static int wino_tiles_w(const struct nn_layer *l)
{
    return (l->ow + 1) / 2;
}

static int wino_tiles_h(const struct nn_layer *l)
{
    return (l->oh + 1) / 2;
}

/* Tile positions (all images) rounded up to whole tiles of the forward loop. */
static size_t wino_q(const struct nn_layer *l, int batch)
{
    /* at least 16 more: the transforms run over whole vectors past a tile row's end */
    return round_up((size_t)wino_tiles_w(l) * wino_tiles_h(l) * batch + 16, DC_NR);
}

/* The floats from one transformed position's plane (xi) to the next, for ch channels: one
 * cache line more than ch * q, so that the 16 planes (q and ch are often such that ch * q
 * floats are a multiple of 4 KiB) do not all fall into the same L1 set: the transforms write
 * and read 16 planes at once, which with a 4 KiB stride evicted each other (the input
 * transform took as long as the products). */
static size_t wino_plane(size_t ch, size_t q)
{
    return ch * q + 16;
}

/* A tile row in the transforms' scratch rows: whole vectors of 16. */
static size_t wino_tws(const struct nn_layer *l)
{
    return round_up((size_t)wino_tiles_w(l), 16);
}

int nn_conv_is_winograd(const struct nn_layer *l)
{
    /* few channels: the transforms would cost more than the products save */
    return l->k == 3 && l->stride == 1 && l->pad >= 0 && l->pad <= 2 && l->ic >= 8 &&
           l->oc >= 8 && nn_kernel_winograd();
}

size_t nn_wino_pack_len(const struct nn_layer *l)
{
    return WG_T * round_up((size_t)l->oc, DC_MR) * l->ic;
}

/* U[xi][ob][c][o4] = (G g G^T)[xi] for g = w[ob + o4][c], in the order dtile reads weights
 * (one tap per "channel"). G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]. */
void nn_wino_pack(const struct nn_layer *l, const float *w, float *wpk)
{
    const int ic = l->ic, oc = l->oc, ocr = (int)round_up((size_t)oc, DC_MR);
    for (int o = 0; o < ocr; o++)
        for (int c = 0; c < ic; c++) {
            float u[4][4] = {{0}}, t[4][3];
            if (o < oc) {
                const float *g = w + ((size_t)o * ic + c) * 9;
                for (int k = 0; k < 3; k++) { /* t = G g */
                    t[0][k] = g[k];
                    t[1][k] = 0.5f * (g[k] + g[3 + k] + g[6 + k]);
                    t[2][k] = 0.5f * (g[k] - g[3 + k] + g[6 + k]);
                    t[3][k] = g[6 + k];
                }
                for (int i = 0; i < 4; i++) { /* u = t G^T */
                    u[i][0] = t[i][0];
                    u[i][1] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
                    u[i][2] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
                    u[i][3] = t[i][2];
                }
            }
            for (int xi = 0; xi < WG_T; xi++)
                wpk[((size_t)xi * ocr + (size_t)(o / DC_MR) * DC_MR) * ic + (size_t)c * DC_MR +
                    o % DC_MR] = u[xi / 4][xi % 4];
        }
}

/* Per worker scratch: one padded input row, its even and its odd samples, and the row
 * transforms of every padded row of one image; the output transform's four rows of tw fit in
 * the same space. */
static size_t wino_scratch_len(const struct nn_layer *l)
{
    const size_t tw = (size_t)wino_tiles_w(l), th = (size_t)wino_tiles_h(l), tws = wino_tws(l);
    return round_up(2 * tw + 2, 16) + 2 * (tws + 16) + 4 * tws * (2 * th + 2);
}

size_t nn_wino_ws_len(const struct nn_layer *l, int batch)
{
    const size_t q = wino_q(l, batch);
    return WG_T * wino_plane(l->ic, q) + WG_T * wino_plane(round_up((size_t)l->oc, DC_MR), q) +
           NN_MAX_THREADS * wino_scratch_len(l) + 8 * DC_ALIGN;
}

struct wino_job {
    const struct nn_layer *l;
    const float *x, *b;
    float *v, *m, *scratch, *y;
    size_t q, ocr;
    int batch, relu, nob, nq, pool;
    const float *wpk;
    const struct dgeo *g;
};

/* Input transform of channel c: V[xi][c][tile] = (B^T d B)[xi], B^T = [1 0 -1 0; 0 1 1 0;
 * 0 -1 1 0; 0 1 0 -1]: first along every padded input row (once per row, though each row
 * serves two tile rows), then down the columns, a whole tile row at a time. The row pass works
 * on the row's even and odd samples (ev[m] = r[2m], od[m] = r[2m + 1]), split once, so that
 * every stream is unit-stride: h0 = ev[tx] - ev[tx + 1], h1 = od[tx] + ev[tx + 1],
 * h2 = ev[tx + 1] - od[tx], h3 = od[tx] - od[tx + 1]. Written once and compiled per kernel
 * (plain, AVX2, AVX-512) by the wrappers below. */
static inline __attribute__((always_inline)) void wino_in_body(const struct wino_job *j, int c,
                                                               int worker)
{
    const struct nn_layer *l = j->l;
    const int tw = wino_tiles_w(l), th = wino_tiles_h(l), p = l->pad, W = 2 * tw + 2;
    const int rows = 2 * th + 2, tws = (int)wino_tws(l);
    const size_t ntiles = (size_t)tw * th * j->batch, plane = wino_plane(l->ic, j->q);
    float *r = j->scratch + (size_t)worker * wino_scratch_len(l);
    float *ev = r + round_up((size_t)W, 16), *od = ev + tws + 16, *hr = od + tws + 16;
    float *vc = j->v + (size_t)c * j->q;
    const int x1 = p + l->iw < W ? p + l->iw : W; /* r[p, x1): the input row */
    for (int n = 0; n < j->batch; n++) {
        const float *xc = j->x + ((size_t)n * l->ic + c) * l->ih * l->iw;
        for (int py = 0; py < rows; py++) {
            float *h = hr + (size_t)py * 4 * tws;
            const int y = py - p;
            if (y < 0 || y >= l->ih) {
                memset(h, 0, sizeof(float) * 4 * tws);
                continue;
            }
            memset(r, 0, sizeof(float) * p);
            memcpy(r + p, xc + (size_t)y * l->iw, sizeof(float) * (x1 - p));
            memset(r + x1, 0, sizeof(float) * (W - x1));
            split_row(r, W, ev, od);
            /* whole vectors: lanes past tw hold leftovers of the scratch and are never read
             * as outputs */
#pragma omp simd
            for (int tx = 0; tx < tws; tx++) {
                const float e0 = ev[tx], o0 = od[tx], e1 = ev[tx + 1], o1 = od[tx + 1];
                h[tx] = e0 - e1;
                h[tws + tx] = o0 + e1;
                h[2 * tws + tx] = e1 - o0;
                h[3 * tws + tx] = o0 - o1;
            }
        }
        for (int ty = 0; ty < th; ty++) {
            const size_t t0 = ((size_t)n * th + ty) * tw;
            const float *hb = hr + (size_t)(2 * ty) * 4 * tws;
            for (int jj = 0; jj < 4; jj++) {
                const float *h0 = hb + (size_t)jj * tws, *h1 = h0 + 4 * tws, *h2 = h1 + 4 * tws,
                            *h3 = h2 + 4 * tws;
                float *v0 = vc + (size_t)jj * plane + t0, *v1 = v0 + 4 * plane,
                      *v2 = v1 + 4 * plane, *v3 = v2 + 4 * plane;
                /* whole vectors too: the lanes past tw land on the next tile row, written
                 * after this one, or past the last tile (wino_q leaves room; zeroed below) */
#pragma omp simd
                for (int tx = 0; tx < tws; tx++) {
                    v0[tx] = h0[tx] - h2[tx];
                    v1[tx] = h1[tx] + h2[tx];
                    v2[tx] = h2[tx] - h1[tx];
                    v3[tx] = h1[tx] - h3[tx];
                }
            }
        }
    }
    /* the tile loop reads whole vectors (at most 16 floats) past the last tile */
    for (int xi = 0; xi < WG_T; xi++)
        memset(vc + (size_t)xi * plane + ntiles, 0,
               sizeof(float) * (round_up(ntiles, 16) - ntiles));
}

DC_PER_KERNEL(wino_in_task, struct wino_job, wino_in_body)

/* The 16 products, task = (xi, block of tiles, group of output channels). */
static void wino_gemm_task(void *arg, int task, int worker)
{
    const struct wino_job *j = arg;
    const int per = j->nq * j->nob, xi = task / per;
    struct rows_job r = {j->v + (size_t)xi * wino_plane(j->l->ic, j->q),
                               j->wpk + (size_t)xi * j->ocr * j->l->ic,
                               NULL,
                               j->g,
                               j->m + (size_t)xi * wino_plane(j->ocr, j->q),
                               j->l->ic,
                               j->l->oc,
                               0,
                               j->nob,
                               j->q};
    rows_task(&r, task % per, worker);
}

/* Output transform of channel o: Y = A^T M A + bias (and ReLU), A^T = [1 1 1 0; 0 1 -1 -1],
 * for a whole tile row at once: 16 unit-stride streams in, the four outputs of each tile into
 * four unit-stride rows, then woven into the two output rows. With pool (a 2x2 stride-2 max
 * pool follows, and the output's sides are even) each tile is one pooling window: the one
 * output is the largest of the four, stored unit-stride into the pooled output. */
static inline __attribute__((always_inline)) void wino_out_body(const struct wino_job *j, int o,
                                                                int worker)
{
    const struct nn_layer *l = j->l;
    const int tw = wino_tiles_w(l), th = wino_tiles_h(l), oh = l->oh, ow = l->ow;
    const int tws = (int)wino_tws(l);
    const size_t plane = wino_plane(j->ocr, j->q);
    const float bias = j->b ? j->b[o] : 0.0f, lo = j->relu ? 0.0f : -INFINITY;
    const float *mo = j->m + (size_t)o * j->q;
    float *t00 = j->scratch + (size_t)worker * wino_scratch_len(l), *t01 = t00 + tws,
          *t10 = t01 + tws, *t11 = t10 + tws;
    /* every loop runs over whole vectors (tws): the products' planes have room past the last
     * tile (wino_q), and the lanes past tw are dropped */
    for (int n = 0; n < j->batch; n++) {
        float *yo = j->y + ((size_t)n * l->oc + o) * (j->pool ? (size_t)th * tw
                                                               : (size_t)oh * ow);
        for (int ty = 0; ty < th; ty++) {
            const float *m = mo + ((size_t)n * th + ty) * tw;
            /* two loops, not one with a branch: merged, the AVX2 build was no longer
             * vectorised (callgrind: 1.6M -> 5.8M instructions per inference) */
            if (j->pool) {
#pragma omp simd
                for (int tx = 0; tx < tws; tx++) {
                    float s0[4], s1[4];
                    for (int i = 0; i < 4; i++) {
                        const float a = m[(size_t)(4 * i) * plane + tx],
                                    b = m[(size_t)(4 * i + 1) * plane + tx],
                                    c = m[(size_t)(4 * i + 2) * plane + tx],
                                    d = m[(size_t)(4 * i + 3) * plane + tx];
                        s0[i] = a + b + c;
                        s1[i] = b - c - d;
                    }
                    const float r00 = s0[0] + s0[1] + s0[2], r01 = s1[0] + s1[1] + s1[2];
                    const float r10 = s0[1] - s0[2] - s0[3], r11 = s1[1] - s1[2] - s1[3];
                    const float m0 = r00 > r01 ? r00 : r01, m1 = r10 > r11 ? r10 : r11;
                    const float mx = (m0 > m1 ? m0 : m1) + bias;
                    t00[tx] = mx > lo ? mx : lo;
                }
                memcpy(yo + (size_t)ty * tw, t00, sizeof(float) * tw);
                continue;
            }
#pragma omp simd
            for (int tx = 0; tx < tws; tx++) {
                float s0[4], s1[4];
                for (int i = 0; i < 4; i++) {
                    const float a = m[(size_t)(4 * i) * plane + tx],
                                b = m[(size_t)(4 * i + 1) * plane + tx],
                                c = m[(size_t)(4 * i + 2) * plane + tx],
                                d = m[(size_t)(4 * i + 3) * plane + tx];
                    s0[i] = a + b + c;
                    s1[i] = b - c - d;
                }
                const float r00 = s0[0] + s0[1] + s0[2] + bias, r01 = s1[0] + s1[1] + s1[2] + bias;
                const float r10 = s0[1] - s0[2] - s0[3] + bias, r11 = s1[1] - s1[2] - s1[3] + bias;
                t00[tx] = r00 > lo ? r00 : lo;
                t01[tx] = r01 > lo ? r01 : lo;
                t10[tx] = r10 > lo ? r10 : lo;
                t11[tx] = r11 > lo ? r11 : lo;
            }
            weave_row(t00, t01, ow, yo + (size_t)(2 * ty) * ow);
            if (2 * ty + 1 < oh)
                weave_row(t10, t11, ow, yo + (size_t)(2 * ty + 1) * ow);
        }
    }
}

DC_PER_KERNEL(wino_out_task, struct wino_job, wino_out_body)

int nn_wino_can_pool(const struct nn_layer *l, const struct nn_layer *pool)
{
    return pool->type == NN_L_MAXPOOL && pool->k == 2 && pool->stride == 2 && pool->pad == 0 &&
           l->oh % 2 == 0 && l->ow % 2 == 0 && pool->oh == l->oh / 2 && pool->ow == l->ow / 2 &&
           pool->ic == l->oc;
}

void nn_wino_forward(const struct nn_layer *l, const float *wpk, const float *b, const float *x,
                     float *y, int batch, float *ws, int relu, int pool)
{
    const size_t q = wino_q(l, batch), ocr = round_up((size_t)l->oc, DC_MR);
    const size_t ntiles = (size_t)wino_tiles_w(l) * wino_tiles_h(l) * batch;
    float *v = align_up(ws), *m = align_up(v + WG_T * wino_plane(l->ic, q));
    float *scratch = align_up(m + WG_T * wino_plane(ocr, q));
    struct dgeo g;
    const int threads = nn_get_threads(), nblk = (int)(ocr / DC_MR);
    struct wino_job j = {l, x, b, v, m, scratch, y, q, ocr, batch, relu, 1,
                         (int)((q + DC_QB - 1) / DC_QB), pool && l->oh % 2 == 0 && l->ow % 2 == 0,
                         wpk, &g};
    /* the products' geometry: one plane per input channel, q floats apart, one tap */
    memset(&g, 0, sizeof(g));
    g.nph = 1;
    g.ntap[0] = 1;
    g.cs = q;
    g.q = q;
    g.qv = ntiles;
    set_taps(&g);
    if (threads > 1 && WG_T * j.nq < 4 * threads)
        j.nob = nblk < 4 ? nblk : 4;
    nn_parallel(wino_in_task, &j, l->ic);
    nn_parallel(wino_gemm_task, &j, WG_T * j.nq * j.nob);
    nn_parallel(wino_out_task, &j, l->oc);
}

/* ---- Winograd in training: weights transformed on every call (they change every step) ---- */

/* The layer whose forward is l's input gradient (stride 1): dy in, dx out, channel axes
 * swapped, padding 2 - p, weights flipped (wino_dx_weights). */
static struct nn_layer wino_dx_layer(const struct nn_layer *l)
{
    struct nn_layer t = *l;
    t.ic = l->oc, t.ih = l->oh, t.iw = l->ow;
    t.oc = l->ic, t.oh = l->ih, t.ow = l->iw;
    t.pad = 2 - l->pad;
    return t;
}

int nn_wino_train_dx(const struct nn_layer *l)
{
    const struct nn_layer t = wino_dx_layer(l);
    return nn_conv_is_winograd(l) && nn_conv_is_winograd(&t);
}

size_t nn_wino_train_ws_len(const struct nn_layer *l, int batch)
{
    const struct nn_layer t = wino_dx_layer(l);
    const size_t fwd = nn_wino_ws_len(l, batch) + nn_wino_pack_len(l) + 2 * DC_ALIGN;
    const size_t bwd = nn_wino_ws_len(&t, batch) + nn_wino_pack_len(&t) + (size_t)l->nw +
                       4 * DC_ALIGN;
    return fwd > bwd ? fwd : bwd;
}

void nn_wino_forward_train(const struct nn_layer *l, const float *w, const float *b,
                           const float *x, float *y, int batch, float *ws, int relu)
{
    float *wpk = align_up(ws + nn_wino_ws_len(l, batch));
    nn_wino_pack(l, w, wpk);
    nn_wino_forward(l, wpk, b, x, y, batch, ws, relu, 0);
}

void nn_wino_input_grad(const struct nn_layer *l, const float *w, const float *dy, float *dx,
                        int batch, float *ws)
{
    const struct nn_layer t = wino_dx_layer(l);
    float *wf = align_up(ws + nn_wino_ws_len(&t, batch)), *wpk = align_up(wf + l->nw);
    for (int c = 0; c < l->ic; c++) /* wf[c][o][k] = w[o][c][8 - k] */
        for (int o = 0; o < l->oc; o++)
            for (int k = 0; k < 9; k++)
                wf[((size_t)c * l->oc + o) * 9 + k] = w[((size_t)o * l->ic + c) * 9 + 8 - k];
    nn_wino_pack(&t, wf, wpk);
    nn_wino_forward(&t, wpk, NULL, dy, dx, batch, ws, 0, 0);
}
