/*
 * file.c - the .cxrm model file: writer and validating loader.
 *
 * Layout (little-endian):
 *   header   "CXRMODEL" (8 bytes), u32 version (1), u32 flags (0), u64 file length
 *   sections u32 tag, u32 payload length, payload; in this order:
 *     INPT  u32 size, u32 channels, char[64] preprocessing (NUL-terminated), f32 mean, f32 std
 *     CLAS  u32 n, then n x (u32 len, bytes)
 *     ARCH  u32 n, then n x (u32 type, i32 out, k, stride, pad, f32 p, i32 oc, oh, ow)
 *           (oc/oh/ow: the declared output shape, checked against shape inference)
 *     TENS  u32 n, then n x (u32 layer, u32 kind, u64 count, count x f32); every parameter
 *           tensor of the architecture in layer order (kind: 0 weight, 1 bias, 2 gamma,
 *           3 beta, 4 running mean, 5 running var)
 *     META  u32 n, then n x (u32 len, key, u32 len, value)
 *   trailer  SHA-256 of every byte before it (32 bytes)
 * The model's digest is the SHA-256 of the whole file. The loader checks, in order: size,
 * magic, version, declared length (truncated file), checksum, then each section, and names
 * the part at fault in its message.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "nn_int.h"

static const char MAGIC[8] = {'C', 'X', 'R', 'M', 'O', 'D', 'E', 'L'};
#define NN_FILE_VERSION 1u
#define HDR_LEN 24u
#define TRAILER_LEN 32u
#define MAX_FILE (512u * 1024 * 1024)

enum { K_W = 0, K_B, K_GAMMA, K_BETA, K_MEAN, K_VAR };
static const char *const kind_names[] = {"weight", "bias", "gamma", "beta", "running mean",
                                         "running var"};

/* ---- writer ---- */

struct wr {
    uint8_t *p;
    size_t len, cap;
};

static void wr_bytes(struct wr *w, const void *d, size_t n)
{
    if (w->p && w->len + n <= w->cap)
        memcpy(w->p + w->len, d, n);
    w->len += n;
}

static void wr_u32(struct wr *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    wr_bytes(w, b, 4);
}

static void wr_u64(struct wr *w, uint64_t v)
{
    wr_u32(w, (uint32_t)v);
    wr_u32(w, (uint32_t)(v >> 32));
}

static void wr_f32(struct wr *w, float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    wr_u32(w, v);
}

static void wr_str(struct wr *w, const char *s)
{
    size_t n = strlen(s);
    wr_u32(w, (uint32_t)n);
    wr_bytes(w, s, n);
}

/* Patches a section's length once its payload is written. */
static void wr_patch_u32(struct wr *w, size_t at, uint32_t v)
{
    if (w->p && at + 4 <= w->cap) {
        w->p[at] = (uint8_t)v, w->p[at + 1] = (uint8_t)(v >> 8);
        w->p[at + 2] = (uint8_t)(v >> 16), w->p[at + 3] = (uint8_t)(v >> 24);
    }
}

static size_t wr_section(struct wr *w, const char tag[4])
{
    wr_bytes(w, tag, 4);
    wr_u32(w, 0);
    return w->len;
}

static void wr_end(struct wr *w, size_t start)
{
    wr_patch_u32(w, start - 4, (uint32_t)(w->len - start));
}

static void wr_tensor(struct wr *w, const float *P, int layer, uint32_t kind, long off, long n)
{
    wr_u32(w, (uint32_t)layer);
    wr_u32(w, kind);
    wr_u64(w, (uint64_t)n);
    for (long i = 0; i < n; i++)
        wr_f32(w, P[off + i]);
}

static void write_all(const nn_model *m, struct wr *w)
{
    size_t s;
    uint32_t nt = 0;
    wr_bytes(w, MAGIC, 8);
    wr_u32(w, NN_FILE_VERSION);
    wr_u32(w, 0);
    wr_u64(w, 0); /* patched below */

    s = wr_section(w, "INPT");
    {
        char pre[NN_NAME_MAX] = {0};
        (void)snprintf(pre, sizeof(pre), "%s", m->spec.preprocessing);
        wr_u32(w, (uint32_t)m->spec.size);
        wr_u32(w, (uint32_t)m->spec.channels);
        wr_bytes(w, pre, sizeof(pre));
        wr_f32(w, m->spec.mean);
        wr_f32(w, m->spec.std);
    }
    wr_end(w, s);

    s = wr_section(w, "CLAS");
    wr_u32(w, (uint32_t)m->n_classes);
    for (int i = 0; i < m->n_classes; i++)
        wr_str(w, m->classes[i]);
    wr_end(w, s);

    s = wr_section(w, "ARCH");
    wr_u32(w, (uint32_t)m->n_layers);
    for (int i = 0; i < m->n_layers; i++) {
        const struct nn_layer *l = &m->layers[i];
        wr_u32(w, (uint32_t)l->type);
        wr_u32(w, (uint32_t)l->out);
        wr_u32(w, (uint32_t)l->k);
        wr_u32(w, (uint32_t)l->stride);
        wr_u32(w, (uint32_t)l->pad);
        wr_f32(w, l->p);
        wr_u32(w, (uint32_t)l->oc);
        wr_u32(w, (uint32_t)l->oh);
        wr_u32(w, (uint32_t)l->ow);
    }
    wr_end(w, s);

    s = wr_section(w, "TENS");
    for (int i = 0; i < m->n_layers; i++) {
        enum nn_layer_type t = m->layers[i].type;
        nt += (t == NN_L_CONV || t == NN_L_DENSE) ? 2 : (t == NN_L_BN ? 4 : 0);
    }
    wr_u32(w, nt);
    for (int i = 0; i < m->n_layers; i++) {
        const struct nn_layer *l = &m->layers[i];
        if (l->type == NN_L_CONV || l->type == NN_L_DENSE) {
            wr_tensor(w, m->params, i, K_W, l->w, l->nw);
            wr_tensor(w, m->params, i, K_B, l->b, l->oc);
        } else if (l->type == NN_L_BN) {
            wr_tensor(w, m->params, i, K_GAMMA, l->gamma, l->ic);
            wr_tensor(w, m->params, i, K_BETA, l->beta, l->ic);
            wr_tensor(w, m->params, i, K_MEAN, l->mean, l->ic);
            wr_tensor(w, m->params, i, K_VAR, l->var, l->ic);
        }
    }
    wr_end(w, s);

    s = wr_section(w, "META");
    wr_u32(w, (uint32_t)m->n_meta);
    for (int i = 0; i < m->n_meta; i++) {
        wr_str(w, m->meta[i].key);
        wr_str(w, m->meta[i].value);
    }
    wr_end(w, s);
    if (w->p && w->cap >= 24) {
        uint64_t total = w->len + TRAILER_LEN;
        wr_patch_u32(w, 16, (uint32_t)total);
        wr_patch_u32(w, 20, (uint32_t)(total >> 32));
    }
}

cxr_err nn_model_serialize(const nn_model *m, uint8_t **ret_data, size_t *ret_len, char *errbuf,
                           size_t errlen)
{
    struct wr w = {0};
    struct cxr_sha256 sh;
    size_t body;
    if (!m || !ret_data || !ret_len)
        return CXR_EINVAL;
    write_all(m, &w);
    body = w.len;
    w.cap = body + TRAILER_LEN;
    w.p = malloc(w.cap);
    if (!w.p) {
        nn_errf(errbuf, errlen, "model file: out of memory (%zu bytes)", w.cap);
        return CXR_ENOMEM;
    }
    w.len = 0;
    write_all(m, &w);
    cxr_sha256_init(&sh);
    cxr_sha256_update(&sh, w.p, body);
    cxr_sha256_final(&sh, w.p + body);
    *ret_data = w.p;
    *ret_len = w.cap;
    return CXR_OK;
}

cxr_err nn_model_save(nn_model *m, const char *path, char *errbuf, size_t errlen)
{
    uint8_t *data = NULL, d[32];
    size_t len = 0;
    struct cxr_sha256 sh;
    cxr_err err;
    if (!m || !path)
        return CXR_EINVAL;
    err = nn_model_serialize(m, &data, &len, errbuf, errlen);
    if (err)
        return err;
    err = cxr_file_write_atomic(path, data, len, 0644);
    if (err) {
        nn_errf(errbuf, errlen, "%s: cannot write model file (%s)", path, cxr_strerror(err));
    } else {
        cxr_sha256_init(&sh);
        cxr_sha256_update(&sh, data, len);
        cxr_sha256_final(&sh, d);
        cxr_sha256_hex(d, m->digest);
    }
    free(data);
    return err;
}

/* ---- loader ---- */

struct rd {
    const uint8_t *p;
    size_t len, pos;
    int bad;
};

static uint32_t rd_u32(struct rd *r)
{
    uint32_t v;
    if (r->bad || r->len - r->pos < 4) {
        r->bad = 1;
        return 0;
    }
    v = (uint32_t)r->p[r->pos] | (uint32_t)r->p[r->pos + 1] << 8 |
        (uint32_t)r->p[r->pos + 2] << 16 | (uint32_t)r->p[r->pos + 3] << 24;
    r->pos += 4;
    return v;
}

static uint64_t rd_u64(struct rd *r)
{
    uint64_t lo = rd_u32(r);
    return lo | (uint64_t)rd_u32(r) << 32;
}

static float rd_f32(struct rd *r)
{
    uint32_t v = rd_u32(r);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

static const uint8_t *rd_bytes(struct rd *r, size_t n)
{
    const uint8_t *p;
    if (r->bad || r->len - r->pos < n) {
        r->bad = 1;
        return NULL;
    }
    p = r->p + r->pos;
    r->pos += n;
    return p;
}

/* A length-prefixed string into out (max outlen-1 bytes, no NUL inside). */
static int rd_str(struct rd *r, char *out, size_t outlen)
{
    uint32_t n = rd_u32(r);
    const uint8_t *p;
    if (r->bad || n >= outlen)
        return -1;
    p = rd_bytes(r, n);
    if (!p || memchr(p, 0, n))
        return -1;
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

/* Opens the next section, which must carry tag; sub is bounded to its payload. */
static cxr_err open_section(struct rd *r, const char *tag, struct rd *sub, char *errbuf,
                            size_t errlen)
{
    const uint8_t *t = rd_bytes(r, 4);
    uint32_t n = rd_u32(r);
    if (!t || r->bad) {
        nn_errf(errbuf, errlen, "section %s: missing (file ends early)", tag);
        return CXR_EMODEL;
    }
    if (memcmp(t, tag, 4) != 0) {
        nn_errf(errbuf, errlen, "section %s: expected here, found another tag", tag);
        return CXR_EMODEL;
    }
    if (r->len - r->pos < n) {
        nn_errf(errbuf, errlen, "section %s: length %u runs past the end of the file", tag, n);
        return CXR_EMODEL;
    }
    sub->p = r->p + r->pos;
    sub->len = n;
    sub->pos = 0;
    sub->bad = 0;
    r->pos += n;
    return CXR_OK;
}

static cxr_err close_section(const struct rd *sub, const char *tag, char *errbuf, size_t errlen)
{
    if (sub->bad) {
        nn_errf(errbuf, errlen, "section %s: truncated (its content runs past its length)", tag);
        return CXR_EMODEL;
    }
    if (sub->pos != sub->len) {
        nn_errf(errbuf, errlen, "section %s: %zu unexpected trailing bytes", tag,
                sub->len - sub->pos);
        return CXR_EMODEL;
    }
    return CXR_OK;
}

static cxr_err load_tensors(nn_model *m, struct rd *s, char *errbuf, size_t errlen)
{
    uint32_t nt = rd_u32(s), expect = 0, ti = 0;
    for (int i = 0; i < m->n_layers; i++) {
        enum nn_layer_type t = m->layers[i].type;
        expect += (t == NN_L_CONV || t == NN_L_DENSE) ? 2 : (t == NN_L_BN ? 4 : 0);
    }
    if (s->bad || nt != expect) {
        nn_errf(errbuf, errlen, "tensors: %u tensors in the file, the layers need %u", nt,
                expect);
        return CXR_EMODEL;
    }
    for (int i = 0; i < m->n_layers; i++) {
        const struct nn_layer *l = &m->layers[i];
        long offs[4], counts[4];
        uint32_t kinds[4];
        int n = 0;
        if (l->type == NN_L_CONV || l->type == NN_L_DENSE) {
            kinds[0] = K_W, offs[0] = l->w, counts[0] = l->nw;
            kinds[1] = K_B, offs[1] = l->b, counts[1] = l->oc;
            n = 2;
        } else if (l->type == NN_L_BN) {
            long o[4] = {l->gamma, l->beta, l->mean, l->var};
            for (int j = 0; j < 4; j++)
                kinds[j] = K_GAMMA + (uint32_t)j, offs[j] = o[j], counts[j] = l->ic;
            n = 4;
        }
        for (int j = 0; j < n; j++, ti++) {
            uint32_t layer = rd_u32(s), kind = rd_u32(s);
            uint64_t count = rd_u64(s);
            const uint8_t *raw;
            float *dst = m->params + offs[j];
            if (s->bad) {
                nn_errf(errbuf, errlen, "tensors: truncated at tensor %u", ti);
                return CXR_EMODEL;
            }
            if (layer != (uint32_t)i || kind != kinds[j]) {
                nn_errf(errbuf, errlen,
                        "tensors: tensor %u is (layer %u, kind %u), expected layer %d %s %s", ti,
                        layer, kind, i, nn_layer_type_name(l->type), kind_names[kinds[j]]);
                return CXR_EMODEL;
            }
            if (count != (uint64_t)counts[j]) {
                nn_errf(errbuf, errlen,
                        "tensor sizes do not match: layer %d %s %s has %llu floats, its shape "
                        "needs %ld",
                        i, nn_layer_type_name(l->type), kind_names[kinds[j]],
                        (unsigned long long)count, counts[j]);
                return CXR_EMODEL;
            }
            raw = rd_bytes(s, (size_t)count * 4);
            if (!raw) {
                nn_errf(errbuf, errlen, "tensors: layer %d %s truncated", i, kind_names[kinds[j]]);
                return CXR_EMODEL;
            }
            for (uint64_t k = 0; k < count; k++) {
                uint32_t v = (uint32_t)raw[4 * k] | (uint32_t)raw[4 * k + 1] << 8 |
                             (uint32_t)raw[4 * k + 2] << 16 | (uint32_t)raw[4 * k + 3] << 24;
                float f;
                memcpy(&f, &v, 4);
                if (!isfinite(f) || (kinds[j] == K_VAR && f < 0.0f)) {
                    nn_errf(errbuf, errlen, "tensors: layer %d %s holds an invalid value at %llu",
                            i, kind_names[kinds[j]], (unsigned long long)k);
                    return CXR_EMODEL;
                }
                dst[k] = f;
            }
        }
    }
    return CXR_OK;
}

cxr_err nn_model_load_mem_flags(const void *data, size_t len, unsigned flags,
                                nn_model **ret_model, char *errbuf, size_t errlen)
{
    struct rd r = {.p = data, .len = len}, s;
    nn_model *m = NULL;
    struct cxr_sha256 sh;
    uint8_t d[32];
    uint32_t version, n;
    uint64_t total;
    cxr_err err = CXR_EMODEL;

    if (!data || !ret_model)
        return CXR_EINVAL;
    if (len < sizeof(MAGIC)) {
        nn_errf(errbuf, errlen, "truncated file: %zu bytes, too short for the magic", len);
        return CXR_EMODEL;
    }
    if (memcmp(data, MAGIC, sizeof(MAGIC)) != 0) {
        nn_errf(errbuf, errlen, "wrong magic: not a cxrtriage model file (.cxrm)");
        return CXR_EMODEL;
    }
    if (len < HDR_LEN + TRAILER_LEN) {
        nn_errf(errbuf, errlen, "truncated file: %zu bytes, too short for header and checksum",
                len);
        return CXR_EMODEL;
    }
    r.pos = 8;
    version = rd_u32(&r);
    (void)rd_u32(&r);
    total = rd_u64(&r);
    if (version != NN_FILE_VERSION) {
        nn_errf(errbuf, errlen, "unknown version %u (this build reads version %u)", version,
                NN_FILE_VERSION);
        return CXR_EMODEL;
    }
    if (total > len) {
        nn_errf(errbuf, errlen, "truncated file: %zu bytes, the header says %llu", len,
                (unsigned long long)total);
        return CXR_EMODEL;
    }
    if (total < len) {
        nn_errf(errbuf, errlen, "trailing data: %zu bytes, the header says %llu", len,
                (unsigned long long)total);
        return CXR_EMODEL;
    }
    if (!(flags & NN_LOAD_SKIP_CHECKSUM)) {
        cxr_sha256_init(&sh);
        cxr_sha256_update(&sh, data, len - TRAILER_LEN);
        cxr_sha256_final(&sh, d);
        if (memcmp(d, (const uint8_t *)data + len - TRAILER_LEN, 32) != 0) {
            nn_errf(errbuf, errlen, "checksum mismatch: the file is corrupt or was modified");
            return CXR_EMODEL;
        }
    }
    r.len = len - TRAILER_LEN;
    m = nn_model_alloc();
    if (!m)
        return CXR_ENOMEM;

    /* INPT */
    if ((err = open_section(&r, "INPT", &s, errbuf, errlen)))
        goto out;
    {
        const uint8_t *pre;
        uint32_t size = rd_u32(&s), ch = rd_u32(&s);
        pre = rd_bytes(&s, NN_NAME_MAX);
        m->spec.mean = rd_f32(&s);
        m->spec.std = rd_f32(&s);
        if ((err = close_section(&s, "INPT", errbuf, errlen)))
            goto out;
        err = CXR_EMODEL;
        if (!pre || !memchr(pre, 0, NN_NAME_MAX) || !pre[0]) {
            nn_errf(errbuf, errlen, "input spec: preprocessing name missing or unterminated");
            goto out;
        }
        memcpy(m->spec.preprocessing, pre, NN_NAME_MAX);
        if (size < 1 || size > 2048 || ch < 1 || ch > 16) {
            nn_errf(errbuf, errlen, "input spec: size %u or channels %u out of range", size, ch);
            goto out;
        }
        if (!isfinite(m->spec.mean) || !isfinite(m->spec.std) || !(m->spec.std > 0.0f)) {
            nn_errf(errbuf, errlen, "input spec: mean/std not finite or std <= 0");
            goto out;
        }
        m->spec.size = (int)size;
        m->spec.channels = (int)ch;
    }

    /* CLAS */
    if ((err = open_section(&r, "CLAS", &s, errbuf, errlen)))
        goto out;
    err = CXR_EMODEL;
    n = rd_u32(&s);
    if (s.bad || n < 2 || n > NN_MAX_CLASSES) {
        nn_errf(errbuf, errlen, "class names: count %u out of range 2..%d", n, NN_MAX_CLASSES);
        goto out;
    }
    m->n_classes = (int)n;
    for (uint32_t i = 0; i < n; i++) {
        if (rd_str(&s, m->classes[i], NN_NAME_MAX) || !m->classes[i][0]) {
            nn_errf(errbuf, errlen, "class names: name %u is empty, too long or truncated", i);
            goto out;
        }
    }
    if ((err = close_section(&s, "CLAS", errbuf, errlen)))
        goto out;

    /* ARCH */
    if ((err = open_section(&r, "ARCH", &s, errbuf, errlen)))
        goto out;
    err = CXR_EMODEL;
    n = rd_u32(&s);
    if (s.bad || n < 1 || n > NN_MAX_LAYERS) {
        nn_errf(errbuf, errlen, "layer list: %u layers (1..%d)", n, NN_MAX_LAYERS);
        goto out;
    }
    m->n_layers = (int)n;
    {
        int decl[NN_MAX_LAYERS][3];
        for (uint32_t i = 0; i < n; i++) {
            struct nn_layer *l = &m->layers[i];
            uint32_t type = rd_u32(&s);
            l->out = (int)rd_u32(&s);
            l->k = (int)rd_u32(&s);
            l->stride = (int)rd_u32(&s);
            l->pad = (int)rd_u32(&s);
            l->p = rd_f32(&s);
            decl[i][0] = (int)rd_u32(&s);
            decl[i][1] = (int)rd_u32(&s);
            decl[i][2] = (int)rd_u32(&s);
            if (s.bad)
                break;
            if (type < NN_L_CONV || type > NN_L_DROPOUT) {
                nn_errf(errbuf, errlen, "layer list: layer %u has unknown type %u", i, type);
                goto out;
            }
            l->type = (enum nn_layer_type)type;
        }
        if ((err = close_section(&s, "ARCH", errbuf, errlen)))
            goto out;
        if ((err = nn_arch_resolve(m, errbuf, errlen)))
            goto out;
        err = CXR_EMODEL;
        for (uint32_t i = 0; i < n; i++) {
            const struct nn_layer *l = &m->layers[i];
            if (decl[i][0] != l->oc || decl[i][1] != l->oh || decl[i][2] != l->ow) {
                nn_errf(errbuf, errlen,
                        "layer shapes do not chain: layer %u (%s) declares output %dx%dx%d, "
                        "its input gives %dx%dx%d",
                        i, nn_layer_type_name(l->type), decl[i][0], decl[i][1], decl[i][2],
                        l->oc, l->oh, l->ow);
                goto out;
            }
        }
    }

    /* TENS */
    if ((err = open_section(&r, "TENS", &s, errbuf, errlen)))
        goto out;
    if ((err = nn_model_alloc_params(m))) {
        nn_errf(errbuf, errlen, "tensors: out of memory for %zu parameters", m->n_params);
        goto out;
    }
    if ((err = load_tensors(m, &s, errbuf, errlen)))
        goto out;
    if ((err = close_section(&s, "TENS", errbuf, errlen)))
        goto out;

    /* META */
    if ((err = open_section(&r, "META", &s, errbuf, errlen)))
        goto out;
    err = CXR_EMODEL;
    n = rd_u32(&s);
    if (s.bad || n > NN_MAX_META) {
        nn_errf(errbuf, errlen, "metadata: %u entries (max %d)", n, NN_MAX_META);
        goto out;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct nn_meta *e = &m->meta[i];
        if (rd_str(&s, e->key, NN_NAME_MAX) || !e->key[0] ||
            rd_str(&s, e->value, NN_META_VALUE_MAX)) {
            nn_errf(errbuf, errlen, "metadata: entry %u is malformed or truncated", i);
            goto out;
        }
        m->n_meta++;
    }
    if ((err = close_section(&s, "META", errbuf, errlen)))
        goto out;
    if (r.pos != r.len) {
        nn_errf(errbuf, errlen, "trailing data: %zu bytes after the last section",
                r.len - r.pos);
        err = CXR_EMODEL;
        goto out;
    }
    cxr_sha256_init(&sh);
    cxr_sha256_update(&sh, data, len);
    cxr_sha256_final(&sh, d);
    cxr_sha256_hex(d, m->digest);
    *ret_model = m;
    m = NULL;
    err = CXR_OK;
out:
    nn_model_free(m);
    return err;
}

cxr_err nn_model_load_mem(const void *data, size_t len, nn_model **ret_model, char *errbuf,
                          size_t errlen)
{
    return nn_model_load_mem_flags(data, len, 0, ret_model, errbuf, errlen);
}

cxr_err nn_model_load(const char *path, nn_model **ret_model, char *errbuf, size_t errlen)
{
    char *data = NULL;
    size_t len = 0;
    char inner[256] = "";
    cxr_err err;
    if (!path || !ret_model)
        return CXR_EINVAL;
    err = cxr_file_read(path, MAX_FILE, &data, &len);
    if (err) {
        nn_errf(errbuf, errlen, "%s: cannot read model file (%s)", path, cxr_strerror(err));
        return err;
    }
    err = nn_model_load_mem(data, len, ret_model, inner, sizeof(inner));
    if (err)
        nn_errf(errbuf, errlen, "%s: %s", path, inner);
    free(data);
    return err;
}
