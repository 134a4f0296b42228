/*
 * route_upload: PUT /v1/files/{name} and POST /v1/uploads (a raw body, or
 * multipart/form-data with up to MAX_FILES_PER_REQUEST files).
 *
 * Each file's bytes are written, span by span, straight from the receive
 * buffers (or, for the few bytes proto/multipart held back as a possible
 * boundary, from its carry buffer) to a nameless file (O_TMPFILE) in
 * STORAGE_DIR. When a file is complete it is fdatasync'ed (FSYNC) and linked
 * to objects/ab/cd/<id>; when the request is complete the rows of all its
 * files are inserted (one batched statement per loop turn) and only then is
 * it answered 201. A failure anywhere unlinks what this request linked and
 * closes what it opened: no visible file, no row.
 *
 * The upload's state is the connection's rdata while the connection owns it
 * (freed, files dropped, if the connection closes first); it moves to the
 * row inserts when they are queued, and the last of them frees it.
 */
#include "engine/route.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <liburing.h>

#include "engine/conn.h"
#include "engine/db.h"
#include "engine/log.h"
#include "engine/ring.h"
#include "engine/store.h"
#include "proto/ids.h"
#include "proto/multipart.h"

#define FIELDS_MAX 65536 /* bytes of non-file form fields a request may carry */

/* One file of an upload. */
struct ufile {
    int fd;           /* the nameless file, -1 once closed */
    bool linked;      /* linked under key: unlink it if the request fails */
    uint64_t written; /* bytes on disk */
    char id[STORE_ID_LEN + 1];
    char name[IDS_NAME_MAX + 1];
    char key[STORE_KEY_MAX]; /* objects/ab/cd/<id>, kept for linkat */
    char proc[32];           /* /proc/self/fd/N, kept for linkat */
};

enum up_step { STEP_NONE, STEP_MKDIR_TOP, STEP_MKDIR_SUB, STEP_RELINK };

struct upload {
    struct ring *ring;
    uint64_t conn;           /* conn_ref() of the uploader */
    enum met_up_route route; /* for metrics */
    bool close;              /* the answer closes the connection */
    uint64_t max;            /* MAX_FILE_SIZE */
    char user[AUTH_USER_MAX + 1];
    struct mp_parser *mp; /* multipart: the parser; NULL for a raw body */
    const char *in;       /* multipart: what is left of the span being parsed */
    size_t inlen;
    uint64_t field_bytes; /* multipart: bytes of non-file fields */
    struct ufile *cur;    /* the file being written, NULL between files */
    uint32_t nfiles;      /* files begun */
    uint32_t maxfiles;    /* MAX_FILES_PER_REQUEST (1 for a raw body) */
    const char *wptr;     /* the write in flight: what is left of it */
    size_t wlen;
    enum up_step step; /* shard directories being made for cur */
    char dir[16];
    uint32_t inserts;     /* row inserts not answered yet */
    int insert_err;       /* first failed insert */
    struct ufile files[]; /* maxfiles */
};

static void resume_feed(struct conn *c, struct upload *u);

static void drop_files(struct upload *u)
{
    uint32_t i;

    for (i = 0; i < u->nfiles; i++) {
        struct ufile *f = &u->files[i];
        if (f->fd >= 0)
            close(f->fd); /* a nameless file: its blocks go with it */
        f->fd = -1;
        if (f->linked)
            unlinkat(store_dirfd(), f->key, 0); /* an error path: a metadata syscall */
        f->linked = false;
    }
}

static void upload_free(struct upload *u)
{
    drop_files(u);
    free(u->mp);
    free(u);
}

static void count_failure(struct upload *u, enum met_up_fail why)
{
    if (u->nfiles > 0)
        met_inc(&u->ring->met.up_failed[u->route][why]);
}

/* The connection closed with the upload unfinished (conn's rdata_free). */
static void upload_gone(void *p)
{
    struct upload *u = p;

    count_failure(u, MET_UF_CLIENT_GONE);
    upload_free(u);
}

/* Give up: drop every file of the request, answer the error, close after it. */
static void fail(struct conn *c, struct upload *u, int status, const char *code, const char *msg)
{
    conn_set_rdata(c, NULL, NULL);
    count_failure(u, status == 413   ? MET_UF_TOO_LARGE
                     : status == 507 ? MET_UF_STORAGE_FULL
                                     : MET_UF_STORAGE_ERROR);
    upload_free(u);
    /* The body may be unread: the connection cannot be reused. */
    route_error(c, conn_head(c), status, code, msg, true,
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

/* ---- one file: open, write, sync, link ---- */

static void on_open(struct conn *c, int res);
static void on_write(struct conn *c, int res);
static void on_sync(struct conn *c, int res);
static void on_link(struct conn *c, int res);
static void on_mkdir(struct conn *c, int res);

static void begin_file(struct conn *c, struct upload *u, const char *name, size_t len)
{
    struct ufile *f = &u->files[u->nfiles++];
    struct io_uring_sqe *sqe;

    f->fd = -1;
    ids_filename(name, len, f->name);
    store_new_id(f->id);
    store_key(f->id, f->key);
    u->cur = f;
    sqe = conn_op_sqe(c, on_open);
    io_uring_prep_openat(sqe, store_dirfd(), ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0640);
}

static void submit_write(struct conn *c, struct upload *u)
{
    struct io_uring_sqe *sqe = conn_op_sqe(c, on_write);

    io_uring_prep_write(sqe, u->cur->fd, u->wptr, (unsigned)u->wlen, u->cur->written);
}

/* Write a span of the current file (async); false if it would pass MAX_FILE_SIZE. */
static bool write_span(struct conn *c, struct upload *u, const char *p, size_t n)
{
    if (u->cur->written + n > u->max) {
        fail(c, u, 413, "too_large", "The file is larger than MAX_FILE_SIZE.");
        return false;
    }
    u->wptr = p;
    u->wlen = n;
    submit_write(c, u);
    return true;
}

static void submit_link(struct conn *c, struct upload *u)
{
    struct io_uring_sqe *sqe = conn_op_sqe(c, on_link);

    /* linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH; the /proc path does not. */
    io_uring_prep_linkat(sqe, AT_FDCWD, u->cur->proc, store_dirfd(), u->cur->key,
                         AT_SYMLINK_FOLLOW);
}

/* The current file is complete: make it durable, then give it its name. */
static void end_file(struct conn *c, struct upload *u)
{
    struct io_uring_sqe *sqe;

    u->step = STEP_NONE;
    if (!u->ring->cfg->fsync) {
        submit_link(c, u);
        return;
    }
    sqe = conn_op_sqe(c, on_sync);
    io_uring_prep_fsync(sqe, u->cur->fd, IORING_FSYNC_DATASYNC);
}

static void on_open(struct conn *c, int res)
{
    struct upload *u = c->rdata;
    struct http_span expect;

    if (res < 0) {
        fail_errno(c, u, res, "open");
        conn_resume(c);
        return;
    }
    u->cur->fd = res;
    snprintf(u->cur->proc, sizeof(u->cur->proc), "/proc/self/fd/%d", res);
    met_inc(&u->ring->met.up_started[u->route]);
    if (u->mp != NULL) {
        resume_feed(c, u);
        return;
    }
    /* A raw body: the client may wait for this before sending it; the checks are behind us. */
    if (http_header(conn_head(c), "expect", &expect) && expect.len == 12 &&
        strncasecmp(expect.p, "100-continue", 12) == 0) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        char *o = conn_out_reserve(c, sizeof(cont) - 1);
        memcpy(o, cont, sizeof(cont) - 1);
        conn_out_commit(c, sizeof(cont) - 1);
    }
    conn_take_body(c);
    conn_resume(c);
}

static void on_write(struct conn *c, int res)
{
    struct upload *u = c->rdata;

    if (res <= 0) {
        fail_errno(c, u, res == 0 ? -EIO : res, "write");
        conn_resume(c);
        return;
    }
    u->cur->written += (uint64_t)res;
    met_add(&u->ring->met.up_bytes_buffered, (uint64_t)res);
    u->wptr += res;
    u->wlen -= (size_t)res;
    if (u->wlen > 0) {
        submit_write(c, u);
        return;
    }
    if (u->mp != NULL)
        resume_feed(c, u);
    else
        conn_resume(c);
}

static void on_sync(struct conn *c, int res)
{
    struct upload *u = c->rdata;

    if (res < 0) {
        fail_errno(c, u, res, "fdatasync");
        conn_resume(c);
        return;
    }
    submit_link(c, u);
}

static bool insert_rows(struct conn *c, struct upload *u);

/* The current file has its name: close it and go on with the request. */
static void file_linked(struct conn *c, struct upload *u)
{
    u->cur->linked = true;
    close(u->cur->fd);
    u->cur->fd = -1;
    u->cur = NULL;
    if (u->mp != NULL)
        resume_feed(c, u);
    else if (!insert_rows(c, u))
        conn_resume(c);
}

static void on_link(struct conn *c, int res)
{
    struct upload *u = c->rdata;
    struct io_uring_sqe *sqe;
    char sub[16];

    if (res == -ENOENT && u->step == STEP_NONE) {
        /* First file of its shard: make objects/ab, then objects/ab/cd, then link again. */
        store_shard_dirs(u->cur->id, u->dir, sub);
        u->step = STEP_MKDIR_TOP;
        sqe = conn_op_sqe(c, on_mkdir);
        io_uring_prep_mkdirat(sqe, store_dirfd(), u->dir, 0750);
        return;
    }
    if (res < 0) {
        fail_errno(c, u, res, "link");
        conn_resume(c);
        return;
    }
    file_linked(c, u);
}

static void on_mkdir(struct conn *c, int res)
{
    struct upload *u = c->rdata;
    struct io_uring_sqe *sqe;
    char top[16];

    if (res < 0 && res != -EEXIST) {
        fail_errno(c, u, res, "mkdir");
        conn_resume(c);
        return;
    }
    if (u->step == STEP_MKDIR_TOP) {
        store_shard_dirs(u->cur->id, top, u->dir);
        u->step = STEP_MKDIR_SUB;
        sqe = conn_op_sqe(c, on_mkdir);
        io_uring_prep_mkdirat(sqe, store_dirfd(), u->dir, 0750);
        return;
    }
    /* Both shard directories exist: a second ENOENT is an error, not another mkdir. */
    u->step = STEP_RELINK;
    submit_link(c, u);
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
        cJSON_AddNumberToObject(o, "size", (double)u->files[i].written);
        cJSON_AddStringToObject(o, "status", "queued");
        if (files != NULL)
            cJSON_AddItemToArray(files, o);
    }
    body = cJSON_PrintUnformatted(doc);
    if (body == NULL)
        log_oom();
    if (u->nfiles == 1)
        snprintf(loc, sizeof(loc), "Location: /v1/files/%s\r\n", u->files[0].id);
    route_respond(c, conn_head(c), 201, ROUTE_JSON, body, strlen(body), false, u->close,
                  loc[0] != '\0' ? loc : NULL);
    free(body);
    cJSON_Delete(doc);
}

/* One file's row is in (err 0) or not; tag is the file's index. */
static void on_inserted(void *ud, uint64_t tag, struct pg_result *res, int err)
{
    struct upload *u = ud;
    struct conn *c;
    uint32_t i;

    (void)res;
    if (err != 0) {
        /* No row for this file: its bytes must not stay behind. */
        unlinkat(store_dirfd(), u->files[tag].key, 0);
        if (u->insert_err == 0)
            u->insert_err = err;
    }
    if (--u->inserts > 0)
        return;
    c = conn_deref(u->ring, u->conn);
    if (u->insert_err !=
        0) { /* Rows that did land stay with their files; the request is answered 503. */
        count_failure(u, MET_UF_DATABASE);
        if (c != NULL) {
            route_error(c, conn_head(c), 503, "database_unavailable",
                        "The file could not be recorded; retry later.", true, "Retry-After: 1\r\n");
            conn_resume(c);
        }
        free(u->mp);
        free(u);
        return;
    }
    for (i = 0; i < u->nfiles; i++)
        u->files[i].linked = false; /* recorded: the files are the user's now */
    met_upload_done(&u->ring->met, u->route, c != NULL ? conn_elapsed_us(c) : 0);
    if (c != NULL) {
        answer(c, u);
        conn_resume(c);
    }
    free(u->mp);
    free(u);
}

/*
 * Every file is linked: insert their rows (they leave as one statement this
 * loop turn); the last answer resumes the connection. Returns false when it
 * answered at once instead (the caller goes on with the connection).
 */
static bool insert_rows(struct conn *c, struct upload *u)
{
    uint32_t i;

    if (u->nfiles == 0) {
        fail(c, u, 400, "bad_request", "The form holds no file.");
        return false;
    }
    conn_set_rdata(c, NULL, NULL); /* the inserts own the upload now */
    u->inserts = u->nfiles;
    for (i = 0; i < u->nfiles; i++) {
        struct db_file_row row = {
            u->files[i].id,  u->user, u->files[i].name, u->files[i].written, "queued",
            u->files[i].key, 0};
        int ret = db_insert_file(&u->ring->db[0], &row, on_inserted, u, i);
        if (ret < 0) {
            /* Refused at once (database down, queue full): no row for this file. */
            unlinkat(store_dirfd(), u->files[i].key, 0);
            u->files[i].linked = false;
            if (u->insert_err == 0)
                u->insert_err = ret;
            u->inserts--;
        }
    }
    if (u->inserts > 0)
        return true; /* the last answer resumes the connection */
    /* Every row was refused at once: answer now, without resuming (we are inside a call). */
    count_failure(u, MET_UF_DATABASE);
    route_error(c, conn_head(c), 503, "database_unavailable",
                "The file could not be recorded; retry later.", true, "Retry-After: 1\r\n");
    free(u->mp);
    free(u);
    return false;
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
        case MP_EV_PART_BEGIN:
            /* filename="" is a browser's empty file input: a field, not a file. */
            if (!ev.part->is_file || ev.part->filename_len == 0)
                break;
            if (u->nfiles == u->maxfiles) {
                fail(c, u, 413, "too_many_files", "More files than MAX_FILES_PER_REQUEST.");
                return FEED_FAILED;
            }
            begin_file(c, u, ev.part->filename, ev.part->filename_len);
            return FEED_OP;
        case MP_EV_DATA:
            if (u->cur == NULL) {
                u->field_bytes += ev.data.len;
                if (u->field_bytes > FIELDS_MAX) {
                    fail(c, u, 413, "too_large", "The form's fields are too large.");
                    return FEED_FAILED;
                }
                break;
            }
            /* Data from the parser's carry buffer stays valid: we parse no more until then. */
            return write_span(c, u, ev.data.p, ev.data.len) ? FEED_OP : FEED_FAILED;
        case MP_EV_PART_END:
            if (u->cur == NULL)
                break;
            end_file(c, u);
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

enum route_verdict route_upload_begin(struct conn *c, const char *user, const char *name,
                                      uint64_t expected, bool close)
{
    struct ring *r = conn_ring(c);
    const struct http_head *h = conn_head(c);
    struct http_span ctype;
    char boundary[MP_BOUNDARY_MAX + 1];
    bool multipart = false;
    uint32_t maxfiles = 1;
    struct upload *u;
    int blen = 0;

    if (!store_fits(expected)) {
        route_error(c, h, 507, "insufficient_storage", "The storage is too full for this file.",
                    true, "Retry-After: 5\r\n");
        return ROUTE_ANSWERED;
    }
    if (h->method == HTTP_POST && http_header(h, "content-type", &ctype)) {
        blen = mp_boundary(ctype.p, ctype.len, boundary);
        multipart = blen > 0;
        if (!multipart && ctype.len >= 10 && strncasecmp(ctype.p, "multipart/", 10) == 0) {
            route_error(c, h, 400, "bad_request", "A multipart body needs a valid boundary.", true,
                        NULL);
            return ROUTE_ANSWERED;
        }
    }
    if (multipart)
        maxfiles = r->cfg->max_files_per_request;
    u = calloc(1, sizeof(*u) + maxfiles * sizeof(u->files[0]));
    if (u == NULL)
        log_oom();
    u->ring = r;
    u->conn = conn_ref(c);
    u->route = h->method == HTTP_PUT ? MET_UP_PUT : MET_UP_POST;
    u->close = close;
    u->max = r->cfg->max_file_size;
    u->maxfiles = maxfiles;
    snprintf(u->user, sizeof(u->user), "%s", user);
    conn_set_rdata(c, u, upload_gone);
    if (!multipart) {
        begin_file(c, u, name, strlen(name));
        return ROUTE_PENDING;
    }
    u->mp = malloc(sizeof(*u->mp));
    if (u->mp == NULL)
        log_oom();
    mp_init(u->mp, boundary, (size_t)blen);
    conn_take_body(c);
    return ROUTE_BODY;
}

enum route_verdict route_body(struct conn *c, struct http_span body)
{
    struct upload *u = c->rdata;

    if (u == NULL)
        return ROUTE_ANSWERED;
    if (u->mp == NULL) {
        /* A chunked body is checked as it grows; a Content-Length one was at the door. */
        return write_span(c, u, body.p, body.len) ? ROUTE_PENDING : ROUTE_ANSWERED;
    }
    u->in = body.p;
    u->inlen = body.len;
    return feed(c, u) == FEED_OP ? ROUTE_PENDING : ROUTE_ANSWERED;
}

enum route_verdict route_body_end(struct conn *c)
{
    struct upload *u = c->rdata;

    if (u == NULL)
        return ROUTE_ANSWERED;
    if (u->mp == NULL) {
        end_file(c, u);
        return ROUTE_PENDING;
    }
    if (mp_finish(u->mp) < 0) {
        fail(c, u, 400, "bad_request", "The multipart body ends before its final boundary.");
        return ROUTE_ANSWERED;
    }
    return insert_rows(c, u) ? ROUTE_PENDING : ROUTE_ANSWERED;
}
