/*
 * daemon.h - the parts of cxrtriaged and how they talk (internal to daemon/).
 *
 * DESIGN (see DESIGN.md, "Data flow" and "Threads")
 * - The listener (dicom/, DCMTK's SCP pool) runs one thread per association. Its callbacks only
 *   check admission against values the loop publishes (atomics and a mutex-guarded allow-list)
 *   and post durable receipts and association events to the loop's inbox (a mutex-guarded list
 *   and an eventfd). They never touch SQLite and never wait for the loop.
 * - The loop thread (loop.c) owns the SQLite writer: it inserts the row of each receipt, hands
 *   jobs to the workers, commits their results, completes quiet studies, refuses new
 *   associations while the disk is under its watermark or the queue too deep, reloads on
 *   SIGHUP and stops on SIGTERM within [daemon] stop_timeout.
 * - Workers (pipeline.c) read the spool file and run the one scoring path (dicom/pixel.c and the
 *   engine), pure functions of the file, the model and the triage rule; results go back to the
 *   loop through its second eventfd.
 * No lock is held across I/O.
 */
#ifndef CXR_DAEMON_H
#define CXR_DAEMON_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common.h"
#include "config.h"
#include "dicom.h"
#include "model.h"
#include "store.h"

/* ---- jobs and results (pipeline.c) ---- */

struct job {
    struct job *next;
    int64_t id;                  /* the instance's row */
    char path[1024];             /* its spool file */
    char sop_instance_uid[65];
    char study_uid[65];
    double receive_ms;           /* from the receipt, recorded with the result */
    double queued_at;            /* monotonic ms when the loop queued it */
    double done_at;              /* monotonic ms when the worker finished */
    struct nn_triage_rule rule;  /* the rule in force when queued */
    struct st_result res;        /* filled by the worker */
};

struct pipeline;
struct http_server;

/* Starts n workers over model (borrowed), each with its own context; done(user) is called from
 * a worker after it appended a finished job to the done list. */
cxr_err pipeline_start(const nn_model *model, int n_workers, void (*done)(void *user),
                       void *user, struct pipeline **ret, char *errbuf, size_t errlen);
/* Queues a job (ownership passes to the pipeline until it comes back from pipeline_take_done). */
void pipeline_submit(struct pipeline *p, struct job *j);
/* Takes every finished job (a list linked by next, in completion order). */
struct job *pipeline_take_done(struct pipeline *p);
/* Jobs queued or running. */
int pipeline_busy(struct pipeline *p);
/* Stops the workers after their current job, joins them and frees p with every job it still
 * holds: their rows stay `received` and the next start resumes them. */
void pipeline_stop(struct pipeline *p);

/* The one scoring path for a file's bytes (uploads; the workers through pipeline_score_fd):
 * decode, gate, preprocess, score, triage. ctx and input (nn_model_input_len floats) belong to
 * the caller. Fills res (state, gate, hash, scores, triage, decode/preprocess/infer timings),
 * what the pixel path saw (format, size) in *ret_pinfo (may be NULL) and the normalised input in
 * input (for a heat map). */
void pipeline_score_ex(const nn_model *model, nn_ctx *ctx, float *input, float *unit,
                       const struct nn_triage_rule *rule, const void *data, size_t len,
                       const char *name, struct st_result *res, struct px_info *ret_pinfo);
/* The same for data that are the whole content of the file open on fd (px_map_file()): DICOM
 * is parsed from the file itself, without copying it (fd < 0: pipeline_score_ex()). */
void pipeline_score_fd(const nn_model *model, nn_ctx *ctx, float *input, float *unit,
                       const struct nn_triage_rule *rule, const void *data, size_t len, int fd,
                       const char *name, struct st_result *res, struct px_info *ret_pinfo);

/* ---- metrics (counters the loop, the listener glue and the HTTP endpoint update; the HTTP
 * endpoint reads them for /metrics). Plain relaxed atomics: each value is exact, a scrape is
 * not a snapshot across values. ---- */

#define MET_LAT_BUCKETS 14   /* per-stage latency histogram, milliseconds (met_lat_le) */
#define MET_SCORE_BUCKETS 10 /* per-class score histogram: 0.1, 0.2, ... 1.0 */
extern const double met_lat_le[MET_LAT_BUCKETS];

struct met_hist {
    atomic_llong bucket[MET_LAT_BUCKETS]; /* non-cumulative; +Inf is count */
    atomic_llong count;
    atomic_llong sum_us;
};

struct daemon_metrics {
    atomic_llong received, classified, skipped, failed;  /* DICOM instances (not uploads) */
    atomic_llong triage[4];                              /* by enum st_triage (0 unused) */
    struct met_hist stage[ST_T__COUNT];                  /* by enum st_stage */
    atomic_llong score_bucket[ST_MAX_CLASSES][MET_SCORE_BUCKETS]; /* non-cumulative */
    atomic_llong score_count[ST_MAX_CLASSES];
    atomic_llong score_sum_e6[ST_MAX_CLASSES];           /* sum of scores x 1e6 */
    atomic_int queue_depth;                              /* rows received and not yet final */
    atomic_int assoc_active;                             /* published every tick */
    atomic_llong uploads[4];                             /* by enum st_state: 0 = rejected */
    atomic_bool db_ok;                                   /* the writer's last write succeeded */
    atomic_bool listening;                               /* the DICOM listener is up */
    int64_t start_ms;                                    /* epoch ms of the start */
};

/* Records one final result (state, triage, stage timings, scores) in the metrics. */
void met_record(struct daemon_metrics *m, const struct st_result *res, bool upload);
/* Adds one observation (ms) to a latency histogram. */
void met_observe(struct met_hist *h, double ms);

/* ---- the loop (loop.c) ---- */

/* An upload from the HTTP endpoint, audited by the loop (the one writer): the HTTP thread waits
 * on cond until done, then reads id or err. */
struct upload_wait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    bool abandoned;              /* the HTTP thread gave up waiting: the loop frees the item */
    int64_t id;
    cxr_err err;
    char errmsg[256];
};

struct inbox_item {
    struct inbox_item *next;
    bool is_event;
    struct st_receipt r;         /* a durable receipt */
    bool scored_class;
    char kind[32];               /* an association event */
    char detail[512];
    struct st_result *upload;    /* non-NULL: an upload (r + its result), never a study */
    struct upload_wait *wait;
};

struct daemon {
    struct cfg_config cfg;
    const char *config_path;     /* for SIGHUP; NULL = built-in defaults */
    nn_model *model;
    struct nn_triage_rule rule;
    char rule_text[ST_TEXT_MAX];
    bool shadow;                 /* [report] mode = shadow */

    st_db *db;
    dcm_listener *listener;
    int listen_fd;               /* plain DICOM, -1 when [dicom] tls = required */
    int tls_listen_fd;           /* DICOM over TLS, -1 when [dicom] tls = off */
    struct pipeline *pipe;
    struct reporter *rep;        /* report.c */
    bool snd_fd_changed;         /* the sender was re-created: register its fd again */

    /* inbox: listener threads -> loop */
    pthread_mutex_t inbox_lock;
    struct inbox_item *inbox_head, *inbox_tail;
    int inbox_fd;                /* eventfd */
    int done_fd;                 /* eventfd: workers -> loop */
    int sig_fd;                  /* read end of the signal self-pipe */

    /* admission: published by the loop, read by association threads */
    pthread_mutex_t allow_lock;
    char allowed_aets[CFG_LIST_MAX];
    atomic_int refusing;         /* 0 = accepting; else an enum refuse_reason */
    atomic_int_fast64_t n_assoc_refused;

    struct daemon_metrics met;
    struct http_server *http;    /* http.c; NULL when [http] enabled = false */
    pthread_mutex_t rule_lock;   /* guards rule for the HTTP threads (the loop writes it) */

    /* loop-only state */
    /* Ledger writes that failed (disk full, read-only or failing file system): the receipt
     * (durable in the spool, already acknowledged) or the finished job is kept here and retried
     * every second until it commits, so it gets its row without a restart. */
    struct inbox_item *retry_receipts, *retry_receipts_tail;
    struct job *retry_results;
    int n_retry;                 /* items on both lists */
    double retry_at;             /* monotonic ms of the next retry */
    int queued;                  /* rows received and not yet final */
    int64_t n_received, n_final;
    struct open_study *studies;  /* studies waiting for quiet */
    bool stopping;
    double stop_deadline;
};

enum refuse_reason { REFUSE_NONE = 0, REFUSE_DISK, REFUSE_QUEUE, REFUSE_STOPPING, REFUSE_UNWRITABLE };

/* The listener's TLS settings from [dicom] (loop.c); for the listener and `cxrtriaged --check`. */
void daemon_tls_config(const struct cfg_config *c, struct dcm_tls_config *ret);

/* Runs the daemon until SIGTERM/SIGINT; returns the exit status. */
int daemon_run(struct daemon *d);

/* The triage rule: the model's operating points overridden by thresholds ("Class=0.3, ...").
 * Logs and returns an error naming the bad class or item. */
cxr_err daemon_build_rule(struct daemon *d, const char *thresholds, struct nn_triage_rule *ret);

/* Reports (report.c): the sender and the local report folder, started after the ledger. */
cxr_err report_start(struct daemon *d);
void report_stop(struct daemon *d);
/* Re-creates the sender from the (reloaded) destinations; attempts in flight stay pending. */
cxr_err report_reload(struct daemon *d);
/* The sender's pollable descriptor (-1 when no destination), and its work when readable. */
int report_fd(const struct daemon *d);
void report_process(struct daemon *d);
/* Submits due reports that are not in flight (every tick). */
void report_pump(struct daemon *d);
int report_in_flight(const struct daemon *d);
/* Completes a study and, unless in shadow mode, queues its reports in the same transaction. */
cxr_err report_complete_study(struct daemon *d, const char *study_uid, int64_t now_ms,
                              struct st_study *ret, char *errbuf, size_t errlen);

/* Listener callbacks (ingest.c). */
extern const struct dcm_listener_ops daemon_listener_ops;
/* Posts an item to the loop's inbox (any thread). */
void daemon_post(struct daemon *d, struct inbox_item *it);

/* Spool files in spool_dir/in without a row, as receipts ("recovered"). fn returns false to
 * stop. Reads each file's header. */
cxr_err ingest_scan_spool(struct daemon *d, bool (*fn)(void *user, struct st_receipt *r,
                                                       bool scored_class),
                          void *user);

/* Workers whose model context is ready (the readiness check), and how many were started. */
int pipeline_alive(struct pipeline *p, int *ret_started);

/* Monotonic milliseconds. */
double mono_ms(void);

#endif
