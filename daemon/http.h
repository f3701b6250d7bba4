/*
 * http.h - the daemon's HTTP endpoint: health, readiness, Prometheus metrics, the JSON API under
 * /api/v1 and the embedded web page (docs/openapi.yaml describes every route).
 *
 * DESIGN
 * - libmicrohttpd runs the endpoint on its own small thread pool ([http] threads). MHD only
 *   collects a request (headers, query, a body bounded by [http] max_body_mb: 413 before reading
 *   more) and hands it to http_handle(), a plain function of (request) -> response that knows
 *   nothing of MHD, so unit tests and a fuzz target drive it directly.
 * - Readers never touch the loop's SQLite writer: every request that reads the ledger opens its
 *   own read-only connection (ST_OPEN_READ), as the CLI does. Two writes exist:
 *   * an upload's audit row (POST /api/v1/classify) is posted to the loop's inbox like a DICOM
 *     receipt and written by the loop (the one writer); the request waits for its row id;
 *   * POST /api/v1/outbox/{id}/retry requeues a dead report through a short-lived ST_OPEN_UPDATE
 *     connection, the exception store.h allows for `cxrtriage outbox retry` (BEGIN IMMEDIATE
 *     with a busy timeout behind the loop's short transactions); the loop's sender picks the
 *     report up at its next tick.
 * - Uploads are scored on the endpoint's own model contexts (a pool of [http] threads slots,
 *   503 when all are busy) by pipeline_score_ex, the daemon's one scoring path. They are audited
 *   with source "upload" and never join a study, so they are never reported to the EHR.
 */
#ifndef CXR_HTTP_H
#define CXR_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "store.h"

struct daemon;
struct http_server;

struct http_kv {
    const char *name;
    const char *value;
};

/* One request as MHD (or a test) collected it. Query values are already percent-decoded. */
struct http_request {
    const char *method;            /* "GET", "POST", ... */
    const char *path;              /* "/api/v1/instances/12" (no query string) */
    const struct http_kv *query;
    size_t n_query;
    const struct http_kv *headers; /* names compared case-insensitively */
    size_t n_headers;
    const unsigned char *body;
    size_t body_len;
    bool body_too_large;           /* more than [http] max_body_mb was sent: answered 413 */
};

#define HTTP_RESP_HEADERS 10
/* The answer: status, content type, body and extra headers; free with http_response_done. */
struct http_response {
    int status;
    char content_type[96];
    const unsigned char *body;     /* what is sent: owned, or an embedded asset */
    size_t body_len;
    unsigned char *owned;          /* the malloc'ed body, freed by http_response_done */
    bool body_static;              /* body points into the embedded assets */
    int n_headers;
    char header_name[HTTP_RESP_HEADERS][40];
    char header_value[HTTP_RESP_HEADERS][320];
};

/* Records an upload's audit row; returns its id. The daemon posts it to the loop and waits. */
typedef cxr_err http_upload_fn(void *user, const struct st_receipt *r, const struct st_result *res,
                               int64_t *ret_id, char *errbuf, size_t errlen);

/* The endpoint's state without MHD (tests, fuzzing): credentials read, scoring pool empty.
 * record NULL: uploads are posted to d's loop. */
cxr_err http_server_new(struct daemon *d, http_upload_fn *record, void *record_user,
                        struct http_server **ret, char *errbuf, size_t errlen);
void http_server_free(struct http_server *s);
/* Answers one request (never fails: errors are JSON responses). */
void http_handle(struct http_server *s, const struct http_request *rq, struct http_response *rs);
void http_response_done(struct http_response *rs);

/* Starts MHD on [http] bind:port (TLS and auth as configured); logs the URL. */
cxr_err http_start(struct daemon *d, struct http_server **ret);
/* Stops MHD (waits for running requests) and frees s; NULL is fine. */
void http_stop(struct http_server *s);
/* "http://127.0.0.1:8080" */
const char *http_url(const struct http_server *s);

/* The route table, as "METHOD PATTERN" ("GET /api/v1/instances/{id}"), in order; fn is called
 * for each. For `cxrtriaged --list-routes` and the OpenAPI check. */
void http_each_route(void (*fn)(void *user, const char *method, const char *pattern), void *user);

#endif
