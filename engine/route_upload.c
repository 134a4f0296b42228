/*
 * route_upload: PUT /v1/files/{name}. The body is written, span by span,
 * from the receive buffers to a nameless file (O_TMPFILE) in STORAGE_DIR;
 * at its end the file is fdatasync'ed (FSYNC), linked to objects/ab/cd/<id>,
 * its row inserted (batched with the loop turn's other rows), and only then
 * answered 201. Any failure closes the nameless file, which disappears: no
 * visible file, no row.
 *
 * The upload's state is the connection's rdata while the connection owns it
 * (freed by conn if the connection closes first); it moves to the row insert
 * when that is queued.
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

#define JSON_TYPE "application/json"

enum upload_stage { UP_OPEN, UP_BODY, UP_SYNC, UP_LINK, UP_MKDIR_TOP, UP_MKDIR_SUB, UP_DB };

struct upload {
    struct ring *ring;
    uint64_t conn; /* conn_ref() of the uploader */
    int fd;        /* the nameless file, -1 before it is open */
    enum upload_stage stage;
    bool close;       /* the answer closes the connection */
    bool started;     /* the file was created (counted as started) */
    uint64_t max;     /* MAX_FILE_SIZE */
    uint64_t written; /* body bytes on disk */
    const char *wptr; /* the write in flight: what is left of it */
    size_t wlen;
    char id[STORE_ID_LEN + 1];
    char user[AUTH_USER_MAX + 1];
    char name[IDS_NAME_MAX + 1];
    char key[STORE_KEY_MAX]; /* objects/ab/cd/<id>, kept for linkat */
    char dir[16];            /* a shard directory being made */
    char proc[32];           /* /proc/self/fd/N, kept for linkat */
};

static void upload_free(void *p)
{
    struct upload *u = p;

    if (u->fd >= 0)
        close(u->fd); /* an unlinked O_TMPFILE: its blocks are freed with it */
    free(u);
}

static void count_failure(struct upload *u, enum met_up_fail why)
{
    if (u->started)
        met_inc(&u->ring->met.up_failed[MET_UP_PUT][why]);
}

/* The connection closed with the upload unfinished (conn's rdata_free). */
static void upload_gone(void *p)
{
    struct upload *u = p;

    count_failure(u, MET_UF_CLIENT_GONE);
    upload_free(u);
}

/* Give up: answer an error (unless one was sent), drop the file, close after. */
static void fail(struct conn *c, struct upload *u, int status, const char *code, const char *msg)
{
    const struct http_head *h = conn_head(c);
    conn_set_rdata(c, NULL, NULL);
    count_failure(u, status == 413   ? MET_UF_TOO_LARGE
                     : status == 507 ? MET_UF_STORAGE_FULL
                                     : MET_UF_STORAGE_ERROR);
    upload_free(u);
    /* The body may be unread: the connection cannot be reused. */
    route_error(c, h, status, code, msg, true,
                status == 503 || status == 507 ? "Retry-After: 5\r\n" : NULL);
}

static void fail_errno(struct conn *c, struct upload *u, int err, const char *what)
{
    if (err == -ENOSPC || err == -EDQUOT) {
        fail(c, u, 507, "insufficient_storage", "The storage is full.");
        return;
    }
    log_error("upload storage failed", "step=%s id=%s error=%s", what, u->id, strerror(-err));
    fail(c, u, 500, "internal_error", "The file could not be stored.");
}

static void on_open(struct conn *c, int res);
static void on_write(struct conn *c, int res);
static void on_sync(struct conn *c, int res);
static void on_link(struct conn *c, int res);
static void on_mkdir(struct conn *c, int res);

static void submit_write(struct conn *c, struct upload *u)
{
    struct io_uring_sqe *sqe = conn_op_sqe(c, on_write);

    io_uring_prep_write(sqe, u->fd, u->wptr, (unsigned)u->wlen, u->written);
}

static void submit_link(struct conn *c, struct upload *u)
{
    struct io_uring_sqe *sqe = conn_op_sqe(c, on_link);

    /* linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH; the /proc path does not. */
    u->stage = UP_LINK;
    io_uring_prep_linkat(sqe, AT_FDCWD, u->proc, store_dirfd(), u->key, AT_SYMLINK_FOLLOW);
}

enum route_verdict route_upload_begin(struct conn *c, const char *user, const char *name,
                                      uint64_t expected, bool close)
{
    struct ring *r = conn_ring(c);
    const struct http_head *h = conn_head(c);
    struct io_uring_sqe *sqe;
    struct upload *u;
    if (!store_fits(expected)) {
        route_error(c, h, 507, "insufficient_storage", "The storage is too full for this file.",
                    true, "Retry-After: 5\r\n");
        return ROUTE_ANSWERED;
    }
    u = calloc(1, sizeof(*u));
    if (u == NULL)
        log_oom();
    u->ring = r;
    u->conn = conn_ref(c);
    u->fd = -1;
    u->close = close;
    u->max = r->cfg->max_file_size;
    snprintf(u->user, sizeof(u->user), "%s", user);
    snprintf(u->name, sizeof(u->name), "%s", name);
    store_new_id(u->id);
    store_key(u->id, u->key);
    conn_set_rdata(c, u, upload_gone);
    u->stage = UP_OPEN;
    sqe = conn_op_sqe(c, on_open);
    io_uring_prep_openat(sqe, store_dirfd(), ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0640);
    return ROUTE_PENDING;
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
    u->fd = res;
    u->started = true;
    met_inc(&u->ring->met.up_started[MET_UP_PUT]);
    snprintf(u->proc, sizeof(u->proc), "/proc/self/fd/%d", res);
    u->stage = UP_BODY;
    /* The client waits for this before sending the body; the checks are behind us. */
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

enum route_verdict route_body(struct conn *c, struct http_span body)
{
    struct upload *u = c->rdata;

    if (u == NULL)
        return ROUTE_ANSWERED;
    /* A chunked body is checked as it grows; a Content-Length one was checked at the door. */
    if (u->written + body.len > u->max) {
        fail(c, u, 413, "too_large", "The file is larger than MAX_FILE_SIZE.");
        return ROUTE_ANSWERED;
    }
    u->wptr = body.p;
    u->wlen = body.len;
    submit_write(c, u);
    return ROUTE_PENDING;
}

static void on_write(struct conn *c, int res)
{
    struct upload *u = c->rdata;

    if (res <= 0) {
        fail_errno(c, u, res == 0 ? -EIO : res, "write");
        conn_resume(c);
        return;
    }
    u->written += (uint64_t)res;
    met_add(&u->ring->met.up_bytes_buffered, (uint64_t)res);
    u->wptr += res;
    u->wlen -= (size_t)res;
    if (u->wlen > 0) {
        submit_write(c, u);
        return;
    }
    conn_resume(c);
}

enum route_verdict route_body_end(struct conn *c)
{
    struct upload *u = c->rdata;
    struct io_uring_sqe *sqe;

    if (u == NULL)
        return ROUTE_ANSWERED;
    if (!u->ring->cfg->fsync) {
        submit_link(c, u);
        return ROUTE_PENDING;
    }
    u->stage = UP_SYNC;
    sqe = conn_op_sqe(c, on_sync);
    io_uring_prep_fsync(sqe, u->fd, IORING_FSYNC_DATASYNC);
    return ROUTE_PENDING;
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

static void on_inserted(void *ud, uint64_t tag, struct pg_result *res, int err);

static void on_link(struct conn *c, int res)
{
    struct upload *u = c->rdata;
    struct db_file_row row;
    char sub[16];
    struct io_uring_sqe *sqe;
    int ret;

    if (res == -ENOENT && u->stage == UP_LINK) {
        /* First file of its shard: make objects/ab, then objects/ab/cd, then link again. */
        store_shard_dirs(u->id, u->dir, sub);
        u->stage = UP_MKDIR_TOP;
        sqe = conn_op_sqe(c, on_mkdir);
        io_uring_prep_mkdirat(sqe, store_dirfd(), u->dir, 0750);
        return;
    }
    if (res < 0) {
        fail_errno(c, u, res, "link");
        conn_resume(c);
        return;
    }
    /* Linked: the bytes are safe under their final name; the row makes them a file. */
    close(u->fd);
    u->fd = -1;
    row.id = u->id;
    row.owner = u->user;
    row.name = u->name;
    row.size = u->written;
    row.status = "queued";
    row.storage_key = u->key;
    row.priority = 0;
    u->stage = UP_DB;
    conn_set_rdata(c, NULL, NULL);
    ret = db_insert_file(&u->ring->db[0], &row, on_inserted, u, u->conn);
    if (ret < 0)
        on_inserted(u, u->conn, NULL, ret);
}

static void on_mkdir(struct conn *c, int res)
{
    struct upload *u = c->rdata;
    struct io_uring_sqe *sqe;
    char sub[16];

    if (res < 0 && res != -EEXIST) {
        fail_errno(c, u, res, "mkdir");
        conn_resume(c);
        return;
    }
    if (u->stage == UP_MKDIR_TOP) {
        store_shard_dirs(u->id, sub, u->dir);
        u->stage = UP_MKDIR_SUB;
        sqe = conn_op_sqe(c, on_mkdir);
        io_uring_prep_mkdirat(sqe, store_dirfd(), u->dir, 0750);
        return;
    } /* Both shard directories exist: link again; stage stays UP_MKDIR_SUB, so a second
       * ENOENT is an error, not another round of mkdir. */
    sqe = conn_op_sqe(c, on_link);
    io_uring_prep_linkat(sqe, AT_FDCWD, u->proc, store_dirfd(), u->key, AT_SYMLINK_FOLLOW);
}

static void on_inserted(void *ud, uint64_t tag, struct pg_result *res, int err)
{
    struct upload *u = ud;
    struct conn *c = conn_deref(u->ring, tag);
    cJSON *doc;
    char *body;
    char loc[80];

    (void)res;
    if (err != 0) {
        /* No row: the linked file must not stay visible. */
        unlinkat(store_dirfd(), u->key, 0);
        count_failure(u, MET_UF_DATABASE);
        if (c != NULL) {
            route_error(c, conn_head(c), 503, "database_unavailable",
                        "The file could not be recorded; retry later.", true, "Retry-After: 1\r\n");
            conn_resume(c);
        }
        free(u);
        return;
    }
    met_upload_done(&u->ring->met, MET_UP_PUT, c != NULL ? conn_elapsed_us(c) : 0);
    if (c == NULL) {
        /* Stored and recorded; the client left before hearing so. */
        free(u);
        return;
    }
    doc = cJSON_CreateObject();
    if (doc == NULL)
        log_oom();
    cJSON_AddStringToObject(doc, "id", u->id);
    cJSON_AddStringToObject(doc, "name", u->name);
    cJSON_AddNumberToObject(doc, "size", (double)u->written);
    cJSON_AddStringToObject(doc, "status", "queued");
    body = cJSON_PrintUnformatted(doc);
    if (body == NULL)
        log_oom();
    snprintf(loc, sizeof(loc), "Location: /v1/files/%s\r\n", u->id);
    route_respond(c, conn_head(c), 201, JSON_TYPE, body, strlen(body), false, u->close, loc);
    free(body);
    cJSON_Delete(doc);
    free(u);
    conn_resume(c);
}
