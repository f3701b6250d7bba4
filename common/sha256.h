/*
 * sha256.h - a small SHA-256 (FIPS 180-4): the model file's checksum and digest, and the audit
 * ledger's hash chain. Streaming (init, update..., final) and a lowercase hex form.
 */
#ifndef CXR_SHA256_H
#define CXR_SHA256_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CXR_SHA256_HEX 65 /* 64 lowercase hex digits plus NUL */

struct cxr_sha256 {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t fill;
};
void cxr_sha256_init(struct cxr_sha256 *s);
void cxr_sha256_update(struct cxr_sha256 *s, const void *data, size_t len);
void cxr_sha256_final(struct cxr_sha256 *s, uint8_t out[32]);
void cxr_sha256_hex(const uint8_t d[32], char out[CXR_SHA256_HEX]);

#ifdef __cplusplus
}
#endif
#endif
