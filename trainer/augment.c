/* augment.c - random affine warp plus intensity changes; see augment.h. */
#include "augment.h"

#include <math.h>

#include "dataset.h"

#define AUG_GAMMA_STEPS 1024

void aug_defaults(struct aug_params *p)
{
    p->rotate_deg = 7.0f;
    p->shift = 0.06f;
    p->zoom = 0.10f;
    p->brightness = 0.08f;
    p->contrast = 0.15f;
    p->gamma = 0.20f;
    p->hflip = false;
}

static float uniform(uint64_t *rng, float r)
{
    return (float)((ds_rand_unit(rng) * 2.0 - 1.0) * r);
}

void aug_apply(const struct aug_params *p, uint64_t *rng, const float *in, float *out, int size)
{
    const float pi = 3.14159265358979f;
    float th = uniform(rng, p->rotate_deg) * pi / 180.0f;
    float scale = 1.0f + uniform(rng, p->zoom);
    float tx = uniform(rng, p->shift) * (float)size, ty = uniform(rng, p->shift) * (float)size;
    float bright = uniform(rng, p->brightness);
    float contrast = 1.0f + uniform(rng, p->contrast);
    float gamma = expf(uniform(rng, p->gamma));
    bool flip = p->hflip && (ds_rand(rng) & 1);
    float c = cosf(th) / scale, s = sinf(th) / scale;
    float mid = ((float)size - 1.0f) * 0.5f;
    /* v^gamma on [0,1] from a table with linear interpolation (max error ~1e-3 next to 0,
     * ~1e-6 elsewhere): one powf per entry instead of one per pixel, which was most of the
     * augmentation's cost and ran on the core the CNN trains on */
    float lut[AUG_GAMMA_STEPS + 2];
    for (int i = 0; i <= AUG_GAMMA_STEPS; i++)
        lut[i] = powf((float)i / AUG_GAMMA_STEPS, gamma);
    lut[AUG_GAMMA_STEPS + 1] = lut[AUG_GAMMA_STEPS];

    /* Inverse mapping: for each output pixel, where it comes from in the input. */
    for (int y = 0; y < size; y++) {
        for (int x = 0; x < size; x++) {
            float ox = (flip ? (float)(size - 1 - x) : (float)x) - mid - tx;
            float oy = (float)y - mid - ty;
            float sx = c * ox + s * oy + mid, sy = -s * ox + c * oy + mid;
            int x0 = (int)floorf(sx), y0 = (int)floorf(sy);
            float fx = sx - (float)x0, fy = sy - (float)y0, v;

            if ((unsigned)x0 < (unsigned)(size - 1) && (unsigned)y0 < (unsigned)(size - 1)) {
                /* inside: all four neighbours exist (most pixels) */
                const float *r0 = in + (size_t)y0 * size + x0, *r1 = r0 + size;
                v = (r0[0] * (1 - fx) + r0[1] * fx) * (1 - fy) + (r1[0] * (1 - fx) + r1[1] * fx) * fy;
            } else if (x0 >= -1 && y0 >= -1 && x0 < size && y0 < size) {
                /* on the border: the missing neighbours count as 0 */
                float p00 = 0, p01 = 0, p10 = 0, p11 = 0;
                if (y0 >= 0 && x0 >= 0)
                    p00 = in[y0 * size + x0];
                if (y0 >= 0 && x0 + 1 < size)
                    p01 = in[y0 * size + x0 + 1];
                if (y0 + 1 < size && x0 >= 0)
                    p10 = in[(y0 + 1) * size + x0];
                if (y0 + 1 < size && x0 + 1 < size)
                    p11 = in[(y0 + 1) * size + x0 + 1];
                v = (p00 * (1 - fx) + p01 * fx) * (1 - fy) + (p10 * (1 - fx) + p11 * fx) * fy;
            } else {
                out[y * size + x] = 0.0f; /* outside the picture */
                continue;
            }
            v = (v - 0.5f) * contrast + 0.5f + bright;
            v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
            {
                const float u = v * AUG_GAMMA_STEPS;
                const int i = (int)u;
                v = lut[i] + (lut[i + 1] - lut[i]) * (u - (float)i);
            }
            out[y * size + x] = v;
        }
    }
}
