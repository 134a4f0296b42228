/*
 * upload: PUT /v1/files/{name} and POST /v1/uploads (a raw body, or
 * multipart/form-data with up to MAX_FILES_PER_REQUEST files).
 *
 * Each file goes to a storage sink (engine/store/sink.h), which makes it,
 * takes its bytes and, once the file's part or body has ended, makes it
 * durable and names it objects/ab/cd/<id>, then tells the outcome. Body
 * spans are handed to the sink straight from the receive buffers (or, for
 * the few bytes proto/multipart held back as a possible boundary, from its
 * carry buffer). When the request is complete the rows of all its files are
 * inserted (one batched statement per loop turn) and only then is it
 * answered 201. A request's rows commit together or not at all. A failure
 * anywhere removes what this request stored: no visible file, no row. The one
 * exception is an insert whose answer was lost (connection lost, timed out):
 * the row may have committed, so the files stay until a lookup says; if the
 * lookup fails too, they stay for `ringup fsck`, and the client is told to
 * retry.
 *
 * This route picks how a raw body with a Content-Length reaches its file,
 * once the bytes received with the head are handed over: spliced socket ->
 * pooled pipe -> file (SPLICE_UPLOADS), or, from DIRECT_IO_THRESHOLD bytes on
 * and when a buffer is free at once, read into a registered aligned buffer
 * and written with O_DIRECT (the page cache is the wall for large bodies);
 * else the buffered path, as chunked and multipart bodies. For the first two
 * the sink reads the socket itself.
 *
 * Whatever the sink reads of the connection (a span in a receive buffer, the
 * socket) keeps the connection pinned (conn_pin) until the sink says it is
 * done with it; a connection that closes meanwhile is freed after that, and
 * its rdata free aborts the sink. The upload's state is the connection's
 * rdata while the connection owns it; it moves to the row inserts when they
 * are queued, and the last of them frees it.
 */
#include "engine/routes/upload.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <libpq-fe.h>

#include "engine/core/conn.h"
#include "engine/core/log.h"
#include "engine/core/ring.h"
#include "engine/db/auth.h"
#include "engine/db/db.h"
#include "engine/db/events.h"
#include "engine/routes/env.h"
#include "engine/routes/limits.h"
#include "engine/routes/progress.h"
#include "engine/routes/reply.h"
#include "engine/store/sink.h"
#include "engine/store/store.h"
#include "engine/store/xfer.h"
#include "proto/ids.h"
#include "proto/multipart.h"

#define FIELDS_MAX 65536 /* bytes of non-file form fields a request may carry */
#define SPLICE_MIN 65536 /* smaller bodies mostly come with the head: buffered (measured) */
#define ROWS_ON_STACK 8  /* a request's rows described without allocating (5 by default) */
#define FORM_SLACK 65536 /* form bytes besides files, fields and file part heads (form_max) */

/* One file of an upload. */
struct ufile {
    uint64_t size; /* bytes handed to its sink; the object's size once committed */
    bool linked;   /* committed under key: remove it if the request fails */
    char id[STORE_ID_LEN + 1];
    char name[IDS_NAME_MAX + 1];
    char key[STORE_KEY_MAX]; /* objects/ab/cd/<id> */
};

struct upload {
    struct router *rt;
    uint64_t conn;           /* conn_ref() of the uploader */
    enum met_up_route route; /* for metrics */
    bool close;              /* the answer closes the connection */
    bool pinned;             /* the sink holds a span or the socket: the connection is pinned */
    uint64_t max;            /* MAX_FILE_SIZE */
    char user[AUTH_USER_MAX + 1];

    struct progress_up prog; /* the X-Progress-Id record, if the client sent one */

    struct mp_parser *mp; /* multipart: the parser; NULL for a raw body */
    const char *in;       /* multipart: what is left of the span being parsed */
    size_t inlen;
    uint64_t field_bytes; /* multipart: bytes of non-file fields */
    uint64_t body;        /* body bytes seen by upload_body() */
    uint64_t body_max;    /* the most the body may carry: form_max(), or MAX_FILE_SIZE */
    struct sink *sink;    /* the current file's sink, NULL between files */
    struct ufile *cur;    /* the file being stored, NULL between files */
    uint32_t nfiles;      /* files begun */
    uint32_t maxfiles;    /* MAX_FILES_PER_REQUEST (1 for a raw body) */
    enum sink_mode mode;  /* raw body: how it reaches the file */
    uint32_t inserts;     /* row inserts not answered yet */
    int insert_err;       /* first failed insert */
    struct lim_wait limw; /* a form's further files: waiting for the rate limits */
    struct ufile files[]; /* maxfiles */
};

static void resume_feed(struct conn *c, struct upload *u);
static bool insert_rows(struct conn *c, struct upload *u);
static enum conn_verdict upload_body(struct conn *c, struct http_span body);
static enum conn_verdict upload_end(struct conn *c);

/* Remove what the request stored so far (an error path). */
static void drop_files(struct upload *u)
{
    uint32_t i;

    for (i = 0; i < u->nfiles; i++) {
        if (u->files[i].linked)
            store_unlink(u->files[i].key);
        u->files[i].linked = false;
    }
}

/* Free the upload's memory; its files are dealt with already. */
static void upload_dispose(struct upload *u)
{
    /* Every end says its outcome first; this only keeps the tracker's list sound. */
    progress_fail(&u->prog, "internal_error");
    free(u->mp);
    free(u);
}

static void upload_free(struct upload *u)
{
    if (u->sink != NULL)
        sink_abort(u->sink);
    u->sink = NULL;
    drop_files(u);
    upload_dispose(u);
}

static void count_failure(struct upload *u, enum met_up_fail why)
{
    if (u->nfiles > 0)
        met_inc(&u->rt->ring->met.up_failed[u->route][why]);
}

/* The connection closed with the upload unfinished (conn's rdata_free): nothing is pinned. */
static void upload_gone(void *p)
{
    struct upload *u = p;

    count_failure(u, MET_UF_CLIENT_GONE);
    progress_fail(&u->prog, "client_gone");
    upload_free(u);
}

/* Give up: drop every file of the request, answer the error, close after it. */
static void fail(struct conn *c, struct upload *u, int status, const char *code, const char *msg)
{
    conn_set_rdata(c, NULL, NULL);
    count_failure(u, status == 413   ? MET_UF_TOO_LARGE
                     : status == 507 ? MET_UF_STORAGE_FULL
                                     : MET_UF_STORAGE_ERROR);
    progress_fail(&u->prog, code);
    upload_free(u);
    /* The body may be unread: the connection cannot be reused. */
    reply_error(c, conn_head(c), status, code, msg, true,
                status == 503 || status == 507 ? "Retry-After: 5\r\n" : NULL);
}

static void fail_errno(struct conn *c, struct upload *u, int err, const char *what)
{
    if (err == -ENOSPC || err == -EDQUOT) {
        fail(c, u, 507, "insufficient_storage", "The storage is full.");
        return;
    }
    log_error("upload storage failed", "step=%s error=%s", what, strerror(-err));
    fail(c, u, 500, "internal_error", "The file could not be stored.");
}

/*
 * The connection back from what the sink held of it: NULL if it is closing
 * (then nothing more is done: its rdata free aborts the sink).
 */
static struct conn *unpin(struct upload *u)
{
    u->pinned = false;
    return conn_unpin(u->rt->conns, u->conn);
}

/* ---- the sink's callbacks ---- */

/*
 * The client may wait for this before sending the body; the checks are behind
 * us. Not to HTTP/1.0, which knows no 1xx: RFC 9110 10.1.1 has the server
 * ignore its expectation.
 */
static void send_continue(struct conn *c)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    const struct http_head *h = conn_head(c);
    struct http_span expect;
    char *o;

    if (h->http_minor == 0 || !http_header(h, "expect", &expect) || expect.len != 12 ||
        strncasecmp(expect.p, "100-continue", 12) != 0)
        return;
    o = conn_out_reserve(c, sizeof(cont) - 1);
    memcpy(o, cont, sizeof(cont) - 1);
    conn_out_commit(c, sizeof(cont) - 1);
}

static void body_detached(struct conn *c, int res);

/* The file is made: count the upload as started and let its bytes come. */
static void on_opened(void *ctx, enum sink_mode mode)
{
    struct upload *u = ctx;
    struct conn *c = conn_find(u->rt->conns, u->conn);

    if (c == NULL)
        return;
    met_inc(&u->rt->ring->met.up_started[u->route]);
    if (u->mp != NULL) {
        resume_feed(c, u);
        return;
    }
    if (mode != u->mode) {
        /* The filesystem took no O_DIRECT: the page cache it is. */
        conn_detach_body(c, mode == SINK_SPLICE ? body_detached : NULL);
        u->mode = mode;
    }
    send_continue(c);
    conn_take_body(c, upload_body, upload_end);
    conn_resume(c);
}

/* A span is taken: the receive buffer may go; parse on, or take the next span. */
static void on_taken(void *ctx)
{
    struct upload *u = ctx;
    struct conn *c = unpin(u);

    if (c == NULL)
        return;
    if (u->mp != NULL)
        resume_feed(c, u);
    else
        conn_resume(c);
}

/* The sink reads the socket for one op: pin the connection, or -1 if it is closing. */
static int on_sock_get(void *ctx)
{
    struct upload *u = ctx;
    struct conn *c = conn_find(u->rt->conns, u->conn);

    if (c == NULL)
        return -1;
    conn_pin(c);
    u->pinned = true;
    return conn_fd(c);
}

static bool on_sock_put(void *ctx, uint64_t n)
{
    struct upload *u = ctx;
    struct conn *c = unpin(u);

    if (c == NULL)
        return false;
    if (n > 0) {
        conn_io_progress(c, n, true);
        progress_add(&u->prog, n);
    }
    return true;
}

/* The sink read the body's last byte: the message is complete, upload_end() follows. */
static void on_read_done(void *ctx)
{
    struct upload *u = ctx;
    struct conn *c = conn_find(u->rt->conns, u->conn);

    if (c != NULL)
        conn_body_read(c);
}

/* The current file is stored (its name is the request's to remove on failure), or not. */
static void on_done(void *ctx, const struct sink_result *res)
{
    struct upload *u = ctx;
    struct ufile *f = u->cur;
    struct conn *c = u->pinned ? unpin(u) : conn_find(u->rt->conns, u->conn);

    u->sink = NULL;
    if (res->err == 0) {
        snprintf(f->id, sizeof(f->id), "%s", res->id);
        snprintf(f->key, sizeof(f->key), "%s", res->key);
        f->size = res->size;
        f->linked = true;
        u->cur = NULL;
        if (c == NULL)
            return;
        if (u->mp != NULL)
            resume_feed(c, u);
        else if (!insert_rows(c, u))
            conn_resume(c);
        return;
    }
    if (c == NULL)
        return;
    if (res->step == SINK_STEP_SOURCE) {
        /* The client went away mid-body or its socket failed: nobody to answer. */
        conn_close(c);
        return;
    }
    if (res->err == -ETIMEDOUT && (res->step == SINK_STEP_PIPE || res->step == SINK_STEP_BUFFER))
        /* Every pipe or buffer stayed lent for CONNECTION_TIMEOUT: the client may retry later. */
        fail(c, u, 503, "overloaded", "The server is busy; retry later.");
    else
        fail_errno(c, u, res->err, sink_step_name(res->step));
    conn_resume(c);
}

static const struct sink_cbs sink_cbs = {
    .opened = on_opened,
    .taken = on_taken,
    .sock_get = on_sock_get,
    .sock_put = on_sock_put,
    .read_done = on_read_done,
    .done = on_done,
};

/* ---- one file ---- */

static void begin_file(struct upload *u, const char *name, size_t len, enum sink_mode mode,
                       enum sink_mode fallback)
{
    struct ufile *f = &u->files[u->nfiles++];

    /* Sanitized already (ids_filename): a second decoding would turn "%2541" into "A". */
    memcpy(f->name, name, len);
    f->name[len] = '\0';
    u->cur = f;
    u->sink = sink_open(u->rt->sinks, mode, fallback, &sink_cbs, u);
}

/* Hand a span of the current file to its sink; false if it would pass MAX_FILE_SIZE (answered). */
static bool write_span(struct conn *c, struct upload *u, const char *p, size_t n, bool *pending)
{
    if (u->cur->size + n > u->max) {
        fail(c, u, 413, "too_large", "The file is larger than MAX_FILE_SIZE.");
        return false;
    }
    u->cur->size += n;
    conn_pin(c);
    u->pinned = true;
    *pending = !sink_write(u->sink, p, n);
    if (!*pending)
        unpin(u); /* copied at once: the connection is not closing, we are in its callback */
    return true;
}

/* The socket is the route's: the sink reads what is left of the body. */
static void body_detached(struct conn *c, int res)
{
    struct upload *u = conn_rdata(c);

    (void)res;
    sink_read(u->sink, http_content_length(conn_parser(c)), true);
}

/* ---- the request's end: rows, then the answer ---- */

static void answer(struct conn *c, struct upload *u)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON *files = NULL;
    char loc[80] = "";
    char *body;
    uint32_t i;

    if (doc == NULL)
        log_oom();
    if (u->route == MET_UP_POST) {
        files = cJSON_AddArrayToObject(doc, "files");
        if (files == NULL)
            log_oom();
    }
    for (i = 0; i < u->nfiles; i++) {
        cJSON *o = files != NULL ? cJSON_CreateObject() : doc;
        if (o == NULL)
            log_oom();
        cJSON_AddStringToObject(o, "id", u->files[i].id);
        cJSON_AddStringToObject(o, "name", u->files[i].name);
        cJSON_AddNumberToObject(o, "size", (double)u->files[i].size);
        cJSON_AddStringToObject(o, "status", "queued");
        if (files != NULL)
            cJSON_AddItemToArray(files, o);
    }
    body = cJSON_PrintUnformatted(doc);
    if (body == NULL)
        log_oom();
    if (u->nfiles == 1)
        snprintf(loc, sizeof(loc), "Location: /v1/files/%s\r\n", u->files[0].id);
    reply_respond(c, conn_head(c), 201, REPLY_JSON, body, strlen(body), false, u->close,
                  loc[0] != '\0' ? loc : NULL);
    free(body);
    cJSON_Delete(doc);
}

/* The rows are in: tell the world (events) and the progress record, files queued. */
static void announce(struct upload *u)
{
    const char *stack[ROWS_ON_STACK];
    const char **ids = stack;
    uint32_t i;

    if (u->nfiles > ROWS_ON_STACK) {
        ids = malloc(u->nfiles * sizeof(*ids));
        if (ids == NULL)
            log_oom();
    }
    for (i = 0; i < u->nfiles; i++) {
        struct events_file ev = {u->files[i].id, u->user, u->files[i].size, NULL, NULL};
        if (u->rt->events != NULL)
            events_emit(u->rt->events, EVENTS_FILE_QUEUED, &ev);
        ids[i] = u->files[i].id;
    }
    progress_done(&u->prog, ids, u->nfiles);
    if (ids != stack)
        free(ids);
}

/* The rows are in: the files are the user's now; answer 201. */
static void recorded(struct upload *u)
{
    struct conn *c = conn_deref(u->rt->conns, u->conn);
    uint32_t i;

    for (i = 0; i < u->nfiles; i++)
        u->files[i].linked = false;
    announce(u);
    met_upload_done(&u->rt->ring->met, u->route, c != NULL ? conn_elapsed_us(c) : 0);
    if (c != NULL) {
        answer(c, u);
        conn_resume(c);
    }
    upload_dispose(u);
}

/*
 * The rows are not in (keep false: their files go), or whether they are is
 * unknown (keep: the files stay for `ringup fsck`, which finds a row for
 * them or removes them). Either way the client (c, if still there) is told
 * to retry; the upload is freed.
 */
static void unrecorded(struct upload *u, struct conn *c, bool keep)
{
    uint32_t i;

    count_failure(u, MET_UF_DATABASE);
    progress_fail(&u->prog, "database_unavailable");
    if (keep) {
        met_inc(&u->rt->ring->met.up_kept);
        log_warn("upload outcome unknown, files kept for fsck", "first_id=%s files=%u error=%s",
                 u->files[0].id, u->nfiles, strerror(-u->insert_err));
    }
    for (i = 0; i < u->nfiles; i++) {
        if (u->files[i].linked && !keep)
            store_unlink(u->files[i].key); /* an error path: a metadata syscall */
        u->files[i].linked = false;
    }
    if (c != NULL)
        reply_error(c, conn_head(c), 503, "database_unavailable",
                    "The file could not be recorded; retry later.", true, "Retry-After: 1\r\n");
    upload_dispose(u);
}

/* unrecorded(), from a database callback: the connection, if still there, goes on. */
static void not_recorded(struct upload *u, bool keep)
{
    struct conn *c = conn_deref(u->rt->conns, u->conn);

    unrecorded(u, c, keep);
    if (c != NULL)
        conn_resume(c);
}

/* The answer to DB_FILE_RECORDED: are the rows in after all? */
static void on_resolved(void *ud, uint64_t tag, struct pg_result *res, int err)
{
    struct upload *u = ud;

    (void)tag;
    if (err != 0)
        not_recorded(u, true);
    else if (PQntuples(res) > 0)
        recorded(u);
    else
        not_recorded(u, false);
}

/*
 * One file's row is in (err 0) or not; tag is the file's index. A request's
 * rows commit together (db_insert_files), so they all answer alike. When the
 * insert was sent and its answer lost (connection lost, timed out), the row
 * may have committed: the files stay until a lookup says whether it did.
 */
static void on_inserted(void *ud, uint64_t tag, struct pg_result *res, int err)
{
    struct upload *u = ud;
    const char *vals[2];
    int lens[2];

    (void)tag;
    (void)res;
    if (err != 0 && u->insert_err == 0)
        u->insert_err = err;
    if (--u->inserts > 0)
        return;
    if (u->insert_err == 0) {
        recorded(u);
        return;
    }
    if (u->insert_err != -ECONNABORTED && u->insert_err != -ETIMEDOUT) {
        not_recorded(u, false);
        return;
    }
    met_inc(&u->rt->ring->met.up_unknown);
    vals[0] = u->files[0].id;
    vals[1] = u->files[0].key;
    lens[0] = (int)strlen(vals[0]);
    lens[1] = (int)strlen(vals[1]);
    if (db_query(&u->rt->db[0], DB_FILE_RECORDED, vals, lens, 2, 0, true, on_resolved, u, 0) < 0)
        not_recorded(u, true);
}

/*
 * Every file is linked: insert their rows, as one unit that commits together
 * (one statement, with other requests' rows of this loop turn); the answer
 * resumes the connection. Returns false when it answered at once instead (the
 * caller goes on with the connection).
 */
static bool insert_rows(struct conn *c, struct upload *u)
{
    struct db_file_row stack[ROWS_ON_STACK];
    struct db_file_row *rows = stack;
    uint32_t i;
    int ret;

    if (u->nfiles == 0) {
        fail(c, u, 400, "bad_request", "The form holds no file.");
        return false;
    }
    if (u->nfiles > ROWS_ON_STACK) {
        rows = malloc(u->nfiles * sizeof(*rows));
        if (rows == NULL)
            log_oom();
    }
    for (i = 0; i < u->nfiles; i++) {
        rows[i] = (struct db_file_row){
            u->files[i].id,  u->user, u->files[i].name, u->files[i].size, "queued",
            u->files[i].key, 0};
    }
    ret = db_insert_files(&u->rt->db[0], rows, u->nfiles, on_inserted, u, 0);
    if (rows != stack)
        free(rows);
    conn_set_rdata(c, NULL, NULL); /* the inserts own the upload now */
    if (ret == 0) {
        u->inserts = u->nfiles;
        return true; /* the last answer resumes the connection */
    }
    /* Refused at once (database down, queue full): no row; answer now, without resuming. */
    unrecorded(u, c, false);
    return false;
}

/* ---- the rate limits: a form's further files ---- */

/*
 * A form's files are counted once it is read: the limits phase took one
 * permit before the body (a form holds at least one file), k files take
 * k-1 more before the rows go in. Refused: 429 (the body is read, the
 * connection may stay), the files removed and the first permit given back,
 * for a refused request uses no budget. Returns as insert_rows() does.
 */
static bool charged(struct conn *c, struct upload *u, const struct lim_verdict *v)
{
    bool close = u->close;

    if (v->allowed)
        return insert_rows(c, u);
    lim_give(u->rt->lim, u->user, 1);
    upload_free(u);
    limits_refuse(c, v, close);
    return false;
}

static void on_charged(struct lim_wait *w, const struct lim_verdict *v)
{
    struct upload *u = (struct upload *)((char *)w - offsetof(struct upload, limw));
    struct conn *c = conn_deref(u->rt->conns, u->conn);

    if (c == NULL) {
        if (v->allowed)
            lim_give(u->rt->lim, u->user, u->nfiles - 1);
        upload_free(u);
        return;
    }
    if (!charged(c, u, v))
        conn_resume(c);
}

/* The form is read: charge its further files, then insert the rows. */
static bool charge_rest(struct conn *c, struct upload *u)
{
    struct lim *l = u->rt->lim;
    struct lim_verdict v;

    if (u->nfiles <= 1 || l == NULL || !lim_on(l))
        return insert_rows(c, u);
    conn_set_rdata(c, NULL, NULL); /* the wait owns the upload; its answer resumes c */
    if (!lim_take(l, u->user, u->nfiles - 1, on_charged, &u->limw, &v))
        return true;
    return charged(c, u, &v);
}

/* ---- multipart: feed the parser until an op is in flight or the span is used up ---- */

enum feed_result {
    FEED_OP,     /* an async op is in flight; it calls resume_feed() */
    FEED_DONE,   /* the span is used up */
    FEED_FAILED, /* answered with an error; the upload is freed */
};

static enum feed_result feed(struct conn *c, struct upload *u)
{
    for (;;) {
        struct mp_event ev;
        ssize_t n = mp_feed(u->mp, u->in, u->inlen, &ev);

        if (n < 0) {
            if (n == -EMSGSIZE)
                fail(c, u, 413, "too_large", "A part's headers are too large.");
            else
                fail(c, u, 400, "bad_request", "The multipart body is malformed.");
            return FEED_FAILED;
        }
        u->in += n;
        u->inlen -= (size_t)n;
        switch (ev.kind) {
        case MP_EV_NONE:
            return FEED_DONE;
        case MP_EV_PART_BEGIN: {
            char name[IDS_NAME_MAX + 1];
            int len;
            /* filename="" is a browser's empty file input: a field, not a file. */
            if (!ev.part->is_file || ev.part->filename_len == 0)
                break;
            if (u->nfiles == u->maxfiles) {
                fail(c, u, 413, "too_many_files", "More files than MAX_FILES_PER_REQUEST.");
                return FEED_FAILED;
            }
            len = ids_filename(ev.part->filename, ev.part->filename_len, name);
            if (len < 0) {
                /* The row would be refused at the end, as a 503 the client retries forever. */
                fail(c, u, 400, "bad_request", "A part's file name is not valid UTF-8.");
                return FEED_FAILED;
            }
            begin_file(u, name, (size_t)len, SINK_BUFFERED, SINK_BUFFERED);
            return FEED_OP;
        }
        case MP_EV_DATA: {
            bool pending;
            if (u->cur == NULL) {
                u->field_bytes += ev.data.len;
                if (u->field_bytes > FIELDS_MAX) {
                    fail(c, u, 413, "too_large", "The form's fields are too large.");
                    return FEED_FAILED;
                }
                break;
            }
            /* Data from the parser's carry buffer stays valid: we parse no more until then. */
            if (!write_span(c, u, ev.data.p, ev.data.len, &pending))
                return FEED_FAILED;
            if (pending)
                return FEED_OP;
            break;
        }
        case MP_EV_PART_END:
            if (u->cur == NULL)
                break;
            sink_commit(u->sink);
            return FEED_OP;
        case MP_EV_DONE:
            break;
        }
    }
}

/* An op of the multipart path completed: parse on, then hand the span back. */
static void resume_feed(struct conn *c, struct upload *u)
{
    if (feed(c, u) != FEED_OP)
        conn_resume(c);
}

/* ---- the route's entry points ---- */

/* The page-cache path of a raw body of expected bytes: spliced, or written from the buffers. */
static enum sink_mode cached_mode(const struct router *r, uint64_t expected)
{
    return r->cfg->splice_uploads && expected >= SPLICE_MIN ? SINK_SPLICE : SINK_BUFFERED;
}

/*
 * How a raw body of expected bytes (0: chunked or empty) reaches the file. A small
 * body is in the receive buffers by the time its file is open: a splice pair (two
 * io-wq hops after a poll) for its last few hundred bytes would cost more than it saves.
 */
static enum sink_mode raw_mode(const struct router *r, uint64_t expected)
{
    if (expected == 0)
        return SINK_BUFFERED;
    if (r->cfg->direct_io_threshold > 0 && expected >= r->cfg->direct_io_threshold &&
        xfer_direct(r->xfer))
        return SINK_DIRECT;
    return cached_mode(r, expected);
}

/*
 * The most a form's body may carry, framing included: MAX_FILES_PER_REQUEST
 * full files, each with a part header block and delimiter at their limits,
 * FIELDS_MAX of other fields' values, and FORM_SLACK for everything else
 * (preamble, epilogue, the fields' headers and delimiters, the close
 * delimiter). A browser's form needs a few hundred bytes of that slack; 64 KiB
 * leaves room for hand-made forms while bounding what parts without a file,
 * which no other limit counts, can make a worker parse.
 */
static uint64_t form_max(const struct router *r)
{
    uint64_t part = r->cfg->max_file_size + MP_HEADER_MAX + MP_CARRY_MAX;

    return part * r->cfg->max_files_per_request + FIELDS_MAX + FORM_SLACK;
}

enum conn_verdict upload_begin(struct conn *c, const char *user, const char *name,
                               uint64_t expected, bool close)
{
    struct router *r = router_of(c);
    const struct http_head *h = conn_head(c);
    struct http_span ctype;
    char boundary[MP_BOUNDARY_MAX + 1];
    bool multipart = false;
    uint32_t maxfiles = 1;
    struct upload *u;
    int blen = 0;

    if (!store_fits(expected)) {
        reply_error(c, h, 507, "insufficient_storage", "The storage is too full for this file.",
                    true, "Retry-After: 5\r\n");
        return CONN_ANSWERED;
    }
    if (h->method == HTTP_POST && http_header(h, "content-type", &ctype)) {
        blen = mp_boundary(ctype.p, ctype.len, boundary);
        multipart = blen > 0;
        if (!multipart && ctype.len >= 10 && strncasecmp(ctype.p, "multipart/", 10) == 0) {
            reply_error(c, h, 400, "bad_request", "A multipart body needs a valid boundary.", true,
                        NULL);
            return CONN_ANSWERED;
        }
    }
    if (multipart)
        maxfiles = r->cfg->max_files_per_request;
    if (multipart && expected > form_max(r)) {
        reply_error(c, h, 413, "too_large",
                    "The form is larger than MAX_FILES_PER_REQUEST files of MAX_FILE_SIZE.", true,
                    NULL);
        return CONN_ANSWERED;
    }
    u = calloc(1, sizeof(*u) + maxfiles * sizeof(u->files[0]));
    if (u == NULL)
        log_oom();
    u->rt = r;
    u->conn = conn_ref(c);
    u->route = h->method == HTTP_PUT ? MET_UP_PUT : MET_UP_POST;
    u->close = close;
    u->max = r->cfg->max_file_size;
    u->body_max = multipart ? form_max(r) : r->cfg->max_file_size;
    u->maxfiles = maxfiles;
    snprintf(u->user, sizeof(u->user), "%s", user);
    conn_set_rdata(c, u, upload_gone);
    progress_begin(&u->prog, r->progress, user, h, expected, !http_chunked(conn_parser(c)));
    if (!multipart) {
        /* An O_DIRECT sink without a buffer free at once takes the page-cache path. */
        begin_file(u, name, strlen(name), raw_mode(r, expected), cached_mode(r, expected));
        u->mode = sink_mode(u->sink);
        /* Stop receiving now: what is not in the receive buffers yet is the sink's to read. */
        if (u->mode != SINK_BUFFERED)
            conn_detach_body(c, body_detached);
        return CONN_PENDING;
    }
    u->mp = malloc(sizeof(*u->mp));
    if (u->mp == NULL)
        log_oom();
    mp_init(u->mp, boundary, (size_t)blen);
    send_continue(c);
    conn_take_body(c, upload_body, upload_end);
    return CONN_READ_BODY;
}

static enum conn_verdict upload_body(struct conn *c, struct http_span body)
{
    struct upload *u = conn_rdata(c);

    if (u == NULL)
        return CONN_ANSWERED;
    /* Checked before the bytes are parsed: a chunked body has no length to check at the door. */
    u->body += body.len;
    progress_add(&u->prog, body.len);
    if (u->body > u->body_max) {
        fail(c, u, 413, "too_large",
             u->mp != NULL ? "The form is larger than MAX_FILES_PER_REQUEST files of MAX_FILE_SIZE."
                           : "The file is larger than MAX_FILE_SIZE.");
        return CONN_ANSWERED;
    }
    if (u->mp == NULL) {
        bool pending;
        /* A chunked body is checked as it grows; a Content-Length one was at the door. */
        if (!write_span(c, u, body.p, body.len, &pending))
            return CONN_ANSWERED;
        return pending ? CONN_PENDING : CONN_ANSWERED;
    }
    u->in = body.p;
    u->inlen = body.len;
    return feed(c, u) == FEED_OP ? CONN_PENDING : CONN_ANSWERED;
}

static enum conn_verdict upload_end(struct conn *c)
{
    struct upload *u = conn_rdata(c);

    if (u == NULL)
        return CONN_ANSWERED;
    if (u->mp == NULL) {
        sink_commit(u->sink);
        return CONN_PENDING;
    }
    if (mp_finish(u->mp) < 0) {
        fail(c, u, 400, "bad_request", "The multipart body ends before its final boundary.");
        return CONN_ANSWERED;
    }
    return charge_rest(c, u) ? CONN_PENDING : CONN_ANSWERED;
}
