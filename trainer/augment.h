/*
 * augment.h - on-the-fly augmentation of [0,1] grey images (size x size, row-major).
 *
 * One random affine warp (rotation, shift, zoom, optional horizontal flip) sampled bilinearly,
 * then brightness, contrast and gamma. Chest anatomy is not symmetric, so flipping is off
 * unless asked for. Pixels that come from outside the image are 0, like the letterbox padding
 * of the pixel path. Pure functions: the caller owns the generator state (one per thread).
 */
#ifndef CXR_AUGMENT_H
#define CXR_AUGMENT_H

#include <stdbool.h>
#include <stdint.h>

struct aug_params {
    float rotate_deg;   /* uniform in [-r, r] */
    float shift;        /* fraction of the side, uniform in [-s, s] per axis */
    float zoom;         /* scale uniform in [1 - z, 1 + z] */
    float brightness;   /* additive, uniform in [-b, b] */
    float contrast;     /* multiplicative around 0.5, uniform in [1 - c, 1 + c] */
    float gamma;        /* exponent exp(uniform in [-g, g]) */
    bool hflip;         /* flip half of the images horizontally */
};

/* The trainer's defaults: small rotation, shift, zoom, brightness, contrast and gamma. */
void aug_defaults(struct aug_params *p);

/* in and out are distinct size*size buffers. */
void aug_apply(const struct aug_params *p, uint64_t *rng, const float *in, float *out, int size);

#endif
