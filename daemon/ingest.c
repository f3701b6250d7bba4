/*
 * ingest.c - the glue between the DICOM listener and the loop: admission, durable receipts and
 * association events, and the start-up scan for spool files that never got a row.
 *
 * Callbacks run on the listener's association threads. They read what the loop publishes (the
 * allow-list under allow_lock, `refusing` atomically), copy what they were given into an inbox
 * item and wake the loop; they never touch SQLite and never wait for the loop. A receipt posted
 * here is already durable (fsynced and renamed by the listener), so answering Success right
 * after is safe: a crash before the loop inserts its row leaves a spool file without a row,
 * which ingest_scan_spool finds at the next start.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"

/* UIDs and the other copied values are bounded by DICOM; truncation cannot happen here. */
static void copy(char *dst, size_t len, const char *src)
{
    (void)cxr_strlcpy(dst, len, src);
}

void daemon_post(struct daemon *d, struct inbox_item *it)
{
    uint64_t one = 1;

    it->next = NULL;
    pthread_mutex_lock(&d->inbox_lock);
    if (d->inbox_tail)
        d->inbox_tail->next = it;
    else
        d->inbox_head = it;
    d->inbox_tail = it;
    pthread_mutex_unlock(&d->inbox_lock);
    if (write(d->inbox_fd, &one, sizeof(one)) < 0) {
        /* the counter is saturated: the loop is awake anyway */
    }
}

static const char *refuse_text(int r)
{
    switch (r) {
    case REFUSE_DISK: return "free disk space under the spool is below [daemon] min_free_mb";
    case REFUSE_QUEUE: return "more instances wait to be scored than [daemon] max_queue";
    case REFUSE_STOPPING: return "the daemon is stopping";
    case REFUSE_UNWRITABLE: return "the spool cannot be written (read-only or failing file system)";
    default: return "";
    }
}

static enum dcm_admit on_admit(void *user, const struct dcm_assoc *a, char *reason, size_t len)
{
    struct daemon *d = user;
    int r = atomic_load(&d->refusing);
    bool allowed;

    pthread_mutex_lock(&d->allow_lock);
    allowed = cfg_aet_allowed(d->allowed_aets, a->calling_aet, a->peer);
    pthread_mutex_unlock(&d->allow_lock);
    if (!allowed) {
        (void)snprintf(reason, len, "calling AE title is not in [dicom] allowed_calling_aets%s",
                       strchr(d->allowed_aets, '@') ? " (or not from its address)" : "");
        return DCM_ADMIT_REJECT_CALLING_AET;
    }
    if (r != REFUSE_NONE) {
        (void)snprintf(reason, len, "%s", refuse_text(r));
        return DCM_ADMIT_REJECT_BUSY;
    }
    return DCM_ADMIT_OK;
}

static uint16_t on_stored(void *user, const struct dcm_stored *s)
{
    struct daemon *d = user;
    struct inbox_item *it = calloc(1, sizeof(*it));

    if (!it)
        return 0xA700; /* out of resources: the listener deletes the file */
    copy(it->r.sop_instance_uid, sizeof(it->r.sop_instance_uid), s->sop_instance_uid);
    copy(it->r.sop_class_uid, sizeof(it->r.sop_class_uid), s->sop_class_uid);
    copy(it->r.study_uid, sizeof(it->r.study_uid), s->study_uid);
    copy(it->r.series_uid, sizeof(it->r.series_uid), s->series_uid);
    copy(it->r.patient_id, sizeof(it->r.patient_id), s->patient_id);
    copy(it->r.accession, sizeof(it->r.accession), s->accession);
    copy(it->r.calling_aet, sizeof(it->r.calling_aet), s->assoc ? s->assoc->calling_aet : "");
    copy(it->r.called_aet, sizeof(it->r.called_aet), s->assoc ? s->assoc->called_aet : "");
    copy(it->r.peer, sizeof(it->r.peer), s->assoc ? s->assoc->peer : "");
    copy(it->r.transfer_syntax, sizeof(it->r.transfer_syntax), s->transfer_syntax);
    copy(it->r.source, sizeof(it->r.source), "dicom");
    copy(it->r.spool_path, sizeof(it->r.spool_path), s->path);
    it->r.size_bytes = s->size_bytes;
    it->r.received_at_ms = s->received_at_ms;
    it->r.receive_ms = s->receive_ms;
    it->scored_class = s->scored_class;
    daemon_post(d, it);
    return 0x0000;
}

static void on_event(void *user, const struct dcm_assoc *a, const char *kind, const char *detail)
{
    struct daemon *d = user;
    struct inbox_item *it = calloc(1, sizeof(*it));

    if (!strcmp(kind, "association.refused"))
        atomic_fetch_add(&d->n_assoc_refused, 1);
    if (!it)
        return;
    it->is_event = true;
    copy(it->kind, sizeof(it->kind), kind);
    if (a)
        (void)snprintf(it->detail, sizeof(it->detail), "assoc=%llu %s",
                       (unsigned long long)a->id, detail ? detail : "");
    else
        copy(it->detail, sizeof(it->detail), detail);
    daemon_post(d, it);
}

const struct dcm_listener_ops daemon_listener_ops = {
    .user = NULL, /* set per daemon by a copy in loop.c */
    .admit = on_admit,
    .stored = on_stored,
    .event = on_event,
};

/* Storage SOP classes the pipeline scores (the listener decides the same for live receipts). */
static bool scored_class(const char *uid)
{
    static const char *const scored[] = {
        "1.2.840.10008.5.1.4.1.1.1",     /* CR Image Storage */
        "1.2.840.10008.5.1.4.1.1.1.1",   /* Digital X-Ray Image Storage - For Presentation */
        "1.2.840.10008.5.1.4.1.1.1.1.1", /* Digital X-Ray Image Storage - For Processing */
        "1.2.840.10008.5.1.4.1.1.7",     /* Secondary Capture Image Storage */
    };
    for (size_t i = 0; i < CXR_ARRAY_SIZE(scored); i++)
        if (!strcmp(uid, scored[i]))
            return true;
    return false;
}

cxr_err ingest_scan_spool(struct daemon *d,
                          bool (*fn)(void *user, struct st_receipt *r, bool scored_class),
                          void *user)
{
    char dir[CFG_PATH_MAX + 8], err[512];
    DIR *dh;
    struct dirent *de;
    cxr_err rc = CXR_OK;

    (void)snprintf(dir, sizeof(dir), "%s/in", d->cfg.spool_dir);
    dh = opendir(dir);
    if (!dh)
        return errno == ENOENT ? CXR_OK : CXR_EIO;
    while ((de = readdir(dh))) {
        struct st_receipt r;
        struct stat st;
        dcm_file *f = NULL;
        bool has = false;

        if (!dcm_spool_name_ok(de->d_name))
            continue;
        memset(&r, 0, sizeof(r));
        if (cxr_path_join_safe(r.spool_path, sizeof(r.spool_path), dir, de->d_name) != CXR_OK)
            continue;
        if (st_has_spool_path(d->db, r.spool_path, &has, err, sizeof(err)) != CXR_OK) {
            rc = cxr_log_err(CXR_EDB, "spool.scan", "msg='%s'", err);
            break;
        }
        if (has || stat(r.spool_path, &st) != 0)
            continue;
        r.size_bytes = (int64_t)st.st_size;
        r.received_at_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
        r.receive_ms = -1;
        copy(r.source, sizeof(r.source), "recovered");
        if (dcm_file_open(r.spool_path, &f, err, sizeof(err)) == CXR_OK) {
            const struct dcm_info *in = dcm_file_info(f);
            copy(r.sop_instance_uid, sizeof(r.sop_instance_uid), in->sop_instance_uid);
            copy(r.sop_class_uid, sizeof(r.sop_class_uid), in->sop_class_uid);
            copy(r.study_uid, sizeof(r.study_uid), in->study_uid);
            copy(r.series_uid, sizeof(r.series_uid), in->series_uid);
            copy(r.patient_id, sizeof(r.patient_id), in->patient_id);
            copy(r.accession, sizeof(r.accession), in->accession);
            copy(r.transfer_syntax, sizeof(r.transfer_syntax), in->transfer_syntax);
            dcm_file_free(f);
        } else {
            /* Keep it anyway: the worker fails it with the reason, so it is audited. The
             * name is <SOP Instance UID>.<unique>.dcm. */
            char name[256], *dot;
            (void)snprintf(name, sizeof(name), "%s", de->d_name);
            for (int k = 0; k < 2 && (dot = strrchr(name, '.')); k++)
                *dot = '\0';
            copy(r.sop_instance_uid, sizeof(r.sop_instance_uid), name);
        }
        if (!fn(user, &r, r.sop_class_uid[0] == '\0' || scored_class(r.sop_class_uid)))
            break;
    }
    (void)closedir(dh);
    return rc;
}
