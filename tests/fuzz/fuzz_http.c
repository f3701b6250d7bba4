/*
 * fuzz_http.c - libFuzzer target over the HTTP endpoint's handler (daemon/http.c, without
 * libmicrohttpd): the input is a request as text,
 *     METHOD PATH[?name=value&...]\n
 *     Name: value\n ...          (headers, up to an empty line)
 *     \n
 *     BODY                       (any bytes: an image to classify, a multipart body, ...)
 * answered by http_handle() against a daemon struct with the bundled model and a ledger in a
 * temporary directory (created once). Built with clang + libFuzzer when CXR_FUZZ is on, and
 * with any compiler against replay_main.c as a plain regression test over corpus/http.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_KV 32

static struct daemon g_d;
static st_db *g_db;
static struct http_server *g_s;

static cxr_err record(void *user, const struct st_receipt *r, const struct st_result *res,
                      int64_t *ret_id, char *errbuf, size_t errlen)
{
    cxr_err e = st_insert_received(user, r, 0, ret_id, errbuf, errlen);
    return e == CXR_OK ? st_finish(user, *ret_id, res, errbuf, errlen) : e;
}

static char g_dir[256];

static void cleanup(void)
{
    char cmd[300];

    st_close(g_db);
    (void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz_http: could not remove %s\n", g_dir);
}

static int setup(void)
{
    char *dir = g_dir;
    char err[512];

    (void)snprintf(g_dir, sizeof(g_dir), "%s/cxr-fuzz-http-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir))
        return -1;
    cfg_defaults(&g_d.cfg);
    (void)snprintf(g_d.cfg.state_dir, sizeof(g_d.cfg.state_dir), "%s", dir);
    (void)atexit(cleanup);
    if (cfg_resolve(&g_d.cfg) != CXR_OK || cxr_mkdir_p(g_d.cfg.spool_dir, 0700) != CXR_OK ||
        nn_model_load(g_d.cfg.model_path, &g_d.model, err, sizeof(err)) != CXR_OK ||
        nn_triage_rule_init(g_d.model, &g_d.rule, err, sizeof(err)) != CXR_OK ||
        st_open(g_d.cfg.audit_db, ST_OPEN_WRITE, &g_db, err, sizeof(err)) != CXR_OK) {
        fprintf(stderr, "fuzz_http: set-up failed: %s\n", err);
        return -1;
    }
    pthread_mutex_init(&g_d.rule_lock, NULL);
    atomic_store(&g_d.met.db_ok, true);
    g_d.met.start_ms = st_now_ms();
    return http_server_new(&g_d, record, g_db, &g_s, err, sizeof(err)) == CXR_OK ? 0 : -1;
}

/* Splits s at the first c (which becomes NUL); returns the rest or NULL. */
static char *cut(char *s, char c)
{
    char *p = strchr(s, c);

    if (!p)
        return NULL;
    *p = '\0';
    return p + 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    struct http_kv q[MAX_KV], h[MAX_KV];
    struct http_request rq;
    struct http_response rs;
    char *text, *line, *rest, *query, *path;
    const uint8_t *body_at = NULL;
    size_t nq = 0, nh = 0, head_len;

    if (!ready)
        ready = setup() == 0 ? 1 : -1;
    if (ready < 0)
        return 0;
    /* the head is text up to the first empty line; the body is the bytes after it */
    for (head_len = 0; head_len + 1 < size; head_len++)
        if (data[head_len] == '\n' && data[head_len + 1] == '\n')
            break;
    text = malloc(head_len + 1);
    if (!text)
        return 0;
    memcpy(text, data, head_len);
    text[head_len] = '\0';
    if (head_len + 2 <= size)
        body_at = data + head_len + 2;
    memset(&rq, 0, sizeof(rq));
    rest = cut(text, '\n');
    rq.method = text;
    path = cut(text, ' ');
    query = path ? cut(path, '?') : NULL;
    rq.path = path ? path : "/";
    while (query && nq < MAX_KV) {
        char *next = cut(query, '&'), *value = cut(query, '=');
        q[nq].name = query;
        q[nq].value = value ? value : "";
        nq++;
        query = next;
    }
    while (rest && nh < MAX_KV) {
        line = rest;
        rest = cut(line, '\n');
        {
            char *value = cut(line, ':');
            if (!value)
                continue;
            while (*value == ' ')
                value++;
            h[nh].name = line;
            h[nh].value = value;
            nh++;
        }
    }
    rq.query = q;
    rq.n_query = nq;
    rq.headers = h;
    rq.n_headers = nh;
    rq.body = body_at;
    rq.body_len = body_at ? size - head_len - 2 : 0;
    http_handle(g_s, &rq, &rs);
    http_response_done(&rs);
    free(text);
    return 0;
}
