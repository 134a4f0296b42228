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
 * it answered 201. With FSYNC the directories the link (and any mkdir)
 * changed are fsync'ed before the row goes in. A request's rows commit
 * together or not at all. A failure anywhere unlinks what this request linked
 * and closes what it opened: no visible file, no row. The one exception is an
 * insert whose answer was lost (connection lost, timed out): the row may have
 * committed, so the files stay until a lookup says; if the lookup fails too,
 * they stay for `ringup fsck`, and the client is told to retry.
 *
 * A raw body with a Content-Length takes one of three paths once the bytes
 * received with the head are written: spliced socket -> pooled pipe -> file
 * (SPLICE_UPLOADS, never entering user space), or, from DIRECT_IO_THRESHOLD
 * bytes on and when a buffer is free at once, read into a registered aligned
 * buffer and written with O_DIRECT (the page cache is the wall for large
 * bodies), the buffer given back whenever the socket runs dry; else the
 * buffered path, as chunked and multipart bodies. Files are direct descriptors
 * where the kernel can install one as a file for the link step (6.8), so an
 * upload in flight holds no process descriptor but its socket's none either.
 *
 * The upload's state is the connection's rdata while the connection owns it
 * (freed, files dropped, if the connection closes first); it moves to the
 * row inserts when they are queued, and the last of them frees it.
 */
#include "engine/routes/route.h"
#include "engine/routes/router.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <liburing.h>

#include "engine/core/conn.h"
#include "engine/core/log.h"
#include "engine/core/ring.h"
#include "engine/db/auth.h"
#include "engine/db/db.h"
#include "engine/store/store.h"
#include "engine/store/xfer.h"
#include "proto/ids.h"
#include "proto/multipart.h"

#define FIELDS_MAX 65536   /* bytes of non-file form fields a request may carry */
#define DIRECT_YIELD 32768 /* a read this short is a slow client: it gives its buffer back */
#define SPLICE_MIN 65536   /* smaller bodies mostly come with the head: buffered (measured) */
#define ROWS_ON_STACK 8    /* a request's rows described without allocating (5 by default) */
#define FORM_SLACK 65536   /* form bytes besides files, fields and file part heads (form_max) */

enum up_mode {
    MODE_BUFFERED, /* written from the receive buffers */
    MODE_SPLICE,   /* the rest of the body spliced socket -> pipe -> file */
    MODE_DIRECT,   /* read into registered buffers, written with O_DIRECT */
};

/* One file of an upload. */
struct ufile {
    int fd;           /* the nameless file (a direct descriptor when fixed), -1 once closed */
    bool fixed;       /* fd is a direct descriptor */
    int tmpfd;        /* a process descriptor of it, only for the link step, or -1 */
    bool linked;      /* linked under key: unlink it if the request fails */
    uint64_t written; /* bytes on disk */
    char id[STORE_ID_LEN + 1];
    char name[IDS_NAME_MAX + 1];
    char key[STORE_KEY_MAX]; /* objects/ab/cd/<id>, kept for linkat */
    char shard[16];          /* objects/ab/cd, where the nameless file is made; "." if missing */
    char proc[32];           /* /proc/self/fd/N, kept for linkat */
};

enum up_step { STEP_NONE, STEP_MKDIR_TOP, STEP_MKDIR_SUB, STEP_RELINK };

struct upload {
    struct router *rt;
    uint64_t conn;           /* conn_ref() of the uploader */
    enum met_up_route route; /* for metrics */
    bool close;              /* the answer closes the connection */
    uint64_t max;            /* MAX_FILE_SIZE */
    char user[AUTH_USER_MAX + 1];
    struct mp_parser *mp; /* multipart: the parser; NULL for a raw body */
    const char *in;       /* multipart: what is left of the span being parsed */
    size_t inlen;
    uint64_t field_bytes; /* multipart: bytes of non-file fields */
    uint64_t body;        /* body bytes seen by route_body() */
    uint64_t body_max;    /* the most the body may carry: form_max(), or MAX_FILE_SIZE */
    struct ufile *cur;    /* the file being written, NULL between files */
    uint32_t nfiles;      /* files begun */
    uint32_t maxfiles;    /* MAX_FILES_PER_REQUEST (1 for a raw body) */
    const char *wptr;     /* the write in flight: what is left of it */
    size_t wlen;
    enum up_step step; /* shard directories being made for cur */
    char dir[16];
    enum up_mode mode;     /* how a raw body reaches the file */
    uint64_t left;         /* splice, direct: body bytes still in the socket */
    struct xfer_pipe pipe; /* splice: the pipe lent for the splice pair in flight */
    bool piped;            /* splice: pipe is lent to us */
    uint32_t in_pipe;      /* splice: bytes in the pipe not yet in the file */
    int dbuf;              /* direct: the buffer lent to us, -1 if none */
    uint32_t fill;         /* direct: bytes in the buffer (or in tail) not yet written */
    uint64_t doff;         /* direct: bytes written to the file (a multiple of XFER_ALIGN) */
    uint32_t wlen_direct;  /* direct: length of the write in flight */
    char *tail;            /* direct: fill bytes kept while the buffer is given back */
    bool finishing;        /* direct: the last write (padded) then the truncate */
    bool yielding;         /* direct: give the buffer back after the write in flight */
    uint32_t inserts;      /* row inserts not answered yet */
    int insert_err;        /* first failed insert */
    int dirfd;             /* FSYNC: the directory being synced, -1 if none */
    uint8_t dsync;         /* FSYNC: directories of cur synced so far */
    uint8_t dsync_n;       /* FSYNC: directories of cur to sync (1, or 3 after mkdir) */
    struct ufile files[];  /* maxfiles */
};

static void resume_feed(struct conn *c, struct upload *u);
static enum conn_verdict upload_body(struct conn *c, struct http_span body);
static enum conn_verdict upload_end(struct conn *c);

/* Submit entry flags for an op on the file. */
static void use_file(struct io_uring_sqe *sqe, const struct ufile *f)
{
    if (f->fixed)
        sqe->flags |= IOSQE_FIXED_FILE;
}

/* Close the file's descriptors; a nameless file's blocks go with it. */
static void close_file(struct upload *u, struct ufile *f)
{
    if (f->tmpfd >= 0)
        close(f->tmpfd);
    f->tmpfd = -1;
    if (f->fd < 0)
        return;
    met_dec(&u->rt->ring->met.up_files_open);
    if (f->fixed) {
        struct io_uring_sqe *sqe = ring_sqe(u->rt->ring);
        io_uring_prep_close_direct(sqe, (unsigned)f->fd);
        io_uring_sqe_set_data64(sqe, ring_ud(RING_KIND_NONE, 0, 0));
    } else {
        close(f->fd);
    }
    f->fd = -1;
}

/* Give back what the transfer borrowed, and leave the queues it may wait in. */
static void release_xfer(struct upload *u)
{
    xfer_cancel(u->rt->xfer, u->conn);
    if (u->piped)
        xfer_pipe_put(u->rt->xfer, u->pipe, u->in_pipe == 0);
    u->piped = false;
    if (u->dbuf >= 0)
        xfer_dbuf_put(u->rt->xfer, u->dbuf);
    u->dbuf = -1;
}

static void drop_files(struct upload *u)
{
    uint32_t i;

    for (i = 0; i < u->nfiles; i++) {
        struct ufile *f = &u->files[i];
        close_file(u, f);
        if (f->linked)
            unlinkat(store_dirfd(), f->key, 0); /* an error path: a metadata syscall */
        f->linked = false;
    }
}

/* Free the upload's memory; its files and borrowed pipe or buffer are dealt with already. */
static void upload_dispose(struct upload *u)
{
    free(u->tail);
    free(u->mp);
    free(u);
}

static void upload_free(struct upload *u)
{
    if (u->dirfd >= 0)
        close(u->dirfd);
    u->dirfd = -1;
    release_xfer(u);
    drop_files(u);
    upload_dispose(u);
}

static void count_failure(struct upload *u, enum met_up_fail why)
{
    if (u->nfiles > 0)
        met_inc(&u->rt->ring->met.up_failed[u->route][why]);
}

/* The connection closed with the upload unfinished (conn's rdata_free). */
static void upload_gone(void *p)
{
    struct upload *u = p;

    /* A splice cut short may have left bytes in the pipe: it is closed, not pooled. */
    if (u->piped)
        u->in_pipe = 1;
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
static void raw_body_begin(struct conn *c);
static void splice_begin(struct conn *c, int res);
static void direct_begin(struct conn *c, int res);
static void direct_detached(struct conn *c, int res);
static void on_write(struct conn *c, int res);
static void on_sync(struct conn *c, int res);
static void on_link(struct conn *c, int res);
static void on_installed(struct conn *c, int res);
static void on_mkdir(struct conn *c, int res);
static void on_diropen(struct conn *c, int res);

/*
 * The connection closed with an op in flight: what the op made is recorded, so
 * that upload_gone() closes the file, the installed descriptor, or unlinks the name.
 */
static void upload_reap(void *p, conn_op_fn fn, int res)
{
    struct upload *u = p;

    if (res < 0 || u->cur == NULL)
        return;
    if (fn == on_open) {
        u->cur->fd = res;
        met_inc(&u->rt->ring->met.up_files_open);
    } else if (fn == on_installed) {
        u->cur->tmpfd = res;
    } else if (fn == on_link) {
        u->cur->linked = true;
    } else if (fn == on_diropen) {
        u->dirfd = res;
    }
}

/*
 * Create the current file, nameless, in the shard directory it will be linked
 * into: its inode is allocated near that directory (spread over the tree, not
 * all in STORAGE_DIR's block group) and the link stays within one directory.
 */
static void submit_open(struct conn *c, struct upload *u)
{
    struct ufile *f = u->cur;
    struct io_uring_sqe *sqe = conn_op_sqe(c, on_open);
    int flags = O_TMPFILE | O_WRONLY | (u->mode == MODE_DIRECT ? O_DIRECT : 0);

    if (f->fixed)
        /* liburing 2.3 adds 1 to the index itself: ALLOC - 1 asks for any free slot. */
        io_uring_prep_openat_direct(sqe, store_dirfd(), f->shard, flags, 0640,
                                    IORING_FILE_INDEX_ALLOC - 1);
    else
        io_uring_prep_openat(sqe, store_dirfd(), f->shard, flags | O_CLOEXEC, 0640);
}

static void begin_file(struct conn *c, struct upload *u, const char *name, size_t len)
{
    struct ufile *f = &u->files[u->nfiles++];

    f->fd = -1;
    f->tmpfd = -1;
    f->fixed = u->rt->ring->has_fd_install;
    /* Sanitized already (ids_filename): a second decoding would turn "%2541" into "A". */
    memcpy(f->name, name, len);
    f->name[len] = '\0';
    store_new_id(f->id);
    store_key(f->id, f->key);
    store_shard_dirs(f->id, u->dir, f->shard);
    u->cur = f;
    submit_open(c, u);
}

static void submit_write(struct conn *c, struct upload *u)
{
    struct io_uring_sqe *sqe = conn_op_sqe(c, on_write);

    io_uring_prep_write(sqe, u->cur->fd, u->wptr, (unsigned)u->wlen, u->cur->written);
    use_file(sqe, u->cur);
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
    struct io_uring_sqe *sqe;

    if (u->cur->fixed && u->cur->tmpfd < 0) {
        /* linkat needs a path: install the direct descriptor as a file for this one step. */
        sqe = conn_op_sqe(c, on_installed);
        io_uring_prep_rw(RING_OP_FIXED_FD_INSTALL, sqe, u->cur->fd, NULL, 0, 0);
        sqe->flags |= IOSQE_FIXED_FILE;
        return;
    }
    sqe = conn_op_sqe(c, on_link);
    if (store_flink() && u->step != STEP_RELINK)
        /*
         * By the descriptor: no walk through /proc. The relink after an ENOENT goes
         * through /proc, in case this kernel refused the descriptor for this file.
         */
        io_uring_prep_linkat(sqe, u->cur->fixed ? u->cur->tmpfd : u->cur->fd, "", store_dirfd(),
                             u->cur->key, AT_EMPTY_PATH);
    else
        /* linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH; the /proc path does not. */
        io_uring_prep_linkat(sqe, AT_FDCWD, u->cur->proc, store_dirfd(), u->cur->key,
                             AT_SYMLINK_FOLLOW);
}

/* The current file is complete: make it durable, then give it its name. */
static void end_file(struct conn *c, struct upload *u)
{
    struct io_uring_sqe *sqe;

    u->step = STEP_NONE;
    if (!u->rt->cfg->fsync) {
        submit_link(c, u);
        return;
    }
    sqe = conn_op_sqe(c, on_sync);
    io_uring_prep_fsync(sqe, u->cur->fd, IORING_FSYNC_DATASYNC);
    use_file(sqe, u->cur);
}

static void on_installed(struct conn *c, int res)
{
    struct upload *u = conn_rdata(c);

    if (res < 0) {
        fail_errno(c, u, res, "install");
        conn_resume(c);
        return;
    }
    u->cur->tmpfd = res;
    snprintf(u->cur->proc, sizeof(u->cur->proc), "/proc/self/fd/%d", res);
    submit_link(c, u);
}

static void on_open(struct conn *c, int res)
{
    struct upload *u = conn_rdata(c);

    if (res == -ENOENT && strcmp(u->cur->shard, ".") != 0) {
        /* The shard is not made yet (ringup init-storage makes them all): STORAGE_DIR then. */
        snprintf(u->cur->shard, sizeof(u->cur->shard), ".");
        submit_open(c, u);
        return;
    }
    if (res == -EINVAL && u->mode == MODE_DIRECT) {
        /* This filesystem takes no O_DIRECT: the page cache it is. */
        release_xfer(u);
        u->mode = u->rt->cfg->splice_uploads ? MODE_SPLICE : MODE_BUFFERED;
        conn_detach_body(c, u->mode == MODE_SPLICE ? splice_begin : NULL);
        submit_open(c, u);
        return;
    }
    if (res < 0) {
        fail_errno(c, u, res, "open");
        conn_resume(c);
        return;
    }
    u->cur->fd = res;
    met_inc(&u->rt->ring->met.up_files_open);
    if (!u->cur->fixed)
        snprintf(u->cur->proc, sizeof(u->cur->proc), "/proc/self/fd/%d", res);
    met_inc(&u->rt->ring->met.up_started[u->route]);
    if (u->mp != NULL) {
        resume_feed(c, u);
        return;
    }
    if (u->mode == MODE_DIRECT) {
        direct_begin(c, 0);
        return;
    }
    raw_body_begin(c);
}

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

/* The file is open (and, for O_DIRECT, a buffer lent): let the raw body come. */
static void raw_body_begin(struct conn *c)
{
    send_continue(c);
    conn_take_body(c, upload_body, upload_end);
    conn_resume(c);
}

static void on_write(struct conn *c, int res)
{
    struct upload *u = conn_rdata(c);

    if (res <= 0) {
        fail_errno(c, u, res == 0 ? -EIO : res, "write");
        conn_resume(c);
        return;
    }
    u->cur->written += (uint64_t)res;
    met_add(&u->rt->ring->met.up_bytes_buffered, (uint64_t)res);
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
    struct upload *u = conn_rdata(c);

    if (res < 0) {
        fail_errno(c, u, res, "fdatasync");
        conn_resume(c);
        return;
    }
    submit_link(c, u);
}

static bool insert_rows(struct conn *c, struct upload *u);
static void sync_next_dir(struct conn *c, struct upload *u);

/* The current file has its name: close it and go on with the request. */
static void file_linked(struct conn *c, struct upload *u)
{
    u->cur->linked = true;
    close_file(u, u->cur);
    u->cur = NULL;
    if (u->mp != NULL)
        resume_feed(c, u);
    else if (!insert_rows(c, u))
        conn_resume(c);
}

static void on_link(struct conn *c, int res)
{
    struct upload *u = conn_rdata(c);
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
    u->cur->linked = true;
    if (!u->rt->cfg->fsync) {
        file_linked(c, u);
        return;
    }
    /* The name is durable only with its directory: objects/ab/cd, and after mkdir its parents. */
    u->dsync = 0;
    u->dsync_n = u->step == STEP_NONE ? 1 : 3;
    sync_next_dir(c, u);
}

/*
 * FSYNC: the directories whose entries the link (and any mkdir) changed,
 * deepest first: objects/ab/cd, then objects/ab and objects.
 */
static void sync_next_dir(struct conn *c, struct upload *u)
{
    struct io_uring_sqe *sqe;
    char *slash;
    unsigned i;

    if (u->dsync == u->dsync_n) {
        file_linked(c, u);
        return;
    }
    /* The path outlives this call: the kernel reads it when the open is submitted. */
    snprintf(u->dir, sizeof(u->dir), "%.*s", (int)(sizeof(u->dir) - 1), u->cur->key);
    for (i = 0; i <= u->dsync; i++) {
        slash = strrchr(u->dir, '/');
        if (slash != NULL)
            *slash = '\0';
    }
    sqe = conn_op_sqe(c, on_diropen);
    io_uring_prep_openat(sqe, store_dirfd(), u->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
}

static void on_dirsync(struct conn *c, int res)
{
    struct upload *u = conn_rdata(c);

    close(u->dirfd);
    u->dirfd = -1;
    if (res < 0) {
        fail_errno(c, u, res, "fsync directory");
        conn_resume(c);
        return;
    }
    met_inc(&u->rt->ring->met.dir_syncs);
    u->dsync++;
    sync_next_dir(c, u);
}

static void on_diropen(struct conn *c, int res)
{
    struct upload *u = conn_rdata(c);
    struct io_uring_sqe *sqe;

    if (res < 0) {
        fail_errno(c, u, res, "open directory");
        conn_resume(c);
        return;
    }
    u->dirfd = res;
    sqe = conn_op_sqe(c, on_dirsync);
    io_uring_prep_fsync(sqe, u->dirfd, 0);
}

static void on_mkdir(struct conn *c, int res)
{
    struct upload *u = conn_rdata(c);
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

/* ---- splice: socket -> pooled pipe -> file ---- */

static void splice_next(struct conn *c, int res);
static void on_spliced_in(struct conn *c, int res);
static void on_spliced_out(struct conn *c, int res);

/* The socket is ours: splice what is left of the body. */
static void splice_begin(struct conn *c, int res)
{
    struct upload *u = conn_rdata(c);

    (void)res;
    u->left = http_content_length(conn_parser(c));
    splice_next(c, 0);
}

/* Borrow a pipe, splice the next piece into it (again when a pipe or the socket is ready). */
static void splice_next(struct conn *c, int res)
{
    struct upload *u = conn_rdata(c);
    struct io_uring_sqe *sqe;
    uint32_t n;
    int err;

    if (res == -ETIMEDOUT) {
        /* Every pipe stayed lent for CONNECTION_TIMEOUT: the client may retry later. */
        fail(c, u, 503, "overloaded", "The server is busy; retry later.");
        conn_resume(c);
        return;
    }
    if (res < 0) {
        conn_close(c);
        return;
    }
    if (!u->piped) {
        if (!xfer_pipe_get(u->rt->xfer, c, &u->pipe, splice_next, &err)) {
            if (err != 0) {
                fail_errno(c, u, err, "pipe");
                conn_resume(c);
            }
            return; /* called again when a pipe comes back */
        }
        u->piped = true;
    }
    n = u->left < u->rt->xfer->pipe_size ? (uint32_t)u->left : u->rt->xfer->pipe_size;
    sqe = conn_op_sqe(c, on_spliced_in);
    /* Non-blocking on the socket: an io-wq worker never waits for a client. */
    io_uring_prep_splice(sqe, conn_fd(c), -1, u->pipe.wr, -1, n,
                         SPLICE_F_NONBLOCK | SPLICE_F_MOVE | SPLICE_F_FD_IN_FIXED);
}

static void submit_splice_out(struct conn *c, struct upload *u)
{
    struct io_uring_sqe *sqe = conn_op_sqe(c, on_spliced_out);

    io_uring_prep_splice(sqe, u->pipe.rd, -1, u->cur->fd, (int64_t)u->cur->written, u->in_pipe,
                         SPLICE_F_MOVE);
    use_file(sqe, u->cur);
}

static void on_spliced_in(struct conn *c, int res)
{
    struct upload *u = conn_rdata(c);

    if (res == -EAGAIN) {
        /* Nothing to read yet: give the pipe back and wait for the socket. */
        xfer_pipe_put(u->rt->xfer, u->pipe, true);
        u->piped = false;
        conn_poll(c, POLLIN, splice_next);
        return;
    }
    if (res <= 0) {
        /* The client went away mid-body (0) or the socket failed: nobody to answer. */
        conn_close(c);
        return;
    }
    u->in_pipe = (uint32_t)res;
    u->left -= (uint64_t)res;
    conn_io_progress(c, (uint64_t)res, true);
    submit_splice_out(c, u);
}

static void on_spliced_out(struct conn *c, int res)
{
    struct upload *u = conn_rdata(c);

    if (res <= 0) {
        fail_errno(c, u, res == 0 ? -EIO : res, "splice");
        conn_resume(c);
        return;
    }
    u->cur->written += (uint64_t)res;
    u->in_pipe -= (uint32_t)res;
    met_add(&u->rt->ring->met.up_bytes_spliced, (uint64_t)res);
    if (u->in_pipe > 0) {
        submit_splice_out(c, u);
        return;
    }
    xfer_pipe_put(u->rt->xfer, u->pipe, true);
    u->piped = false;
    if (u->left > 0) {
        splice_next(c, 0);
        return;
    }
    conn_body_read(c); /* route_body_end() follows from here */
}

/* ---- O_DIRECT: socket -> registered aligned buffer -> file ---- */

static void direct_read(struct conn *c, struct upload *u);
static void on_direct_write(struct conn *c, int res);
static void on_truncated(struct conn *c, int res);

static char *dbuf(const struct upload *u)
{
    return xfer_dbuf_addr(u->rt->xfer, u->dbuf);
}

/* Borrow a buffer (fn runs when one comes back) and put back what a yield kept. */
static bool direct_borrow(struct conn *c, struct upload *u, conn_op_fn fn)
{
    if (u->dbuf >= 0)
        return true;
    u->dbuf = xfer_dbuf_get(u->rt->xfer, c, fn);
    if (u->dbuf < 0)
        return false;
    if (u->fill > 0)
        memcpy(dbuf(u), u->tail, u->fill);
    return true;
}

/* The file is open, the buffer lent at the door: let the body come. */
static void direct_begin(struct conn *c, int res)
{
    (void)res;
    raw_body_begin(c);
}

/* Write len bytes (a multiple of XFER_ALIGN) from the buffer's start at doff. */
static void direct_write(struct conn *c, struct upload *u, uint32_t len)
{
    struct io_uring_sqe *sqe = conn_op_sqe(c, on_direct_write);

    u->wlen_direct = len;
    io_uring_prep_write_fixed(sqe, u->cur->fd, dbuf(u), len, u->doff, u->dbuf);
    use_file(sqe, u->cur);
}

/* Copy the received span into the buffer, writing it when it fills; false: a write is in flight. */
static bool direct_copy(struct conn *c, struct upload *u)
{
    while (u->inlen > 0) {
        uint32_t room = XFER_DBUF_SIZE - u->fill;
        uint32_t n = u->inlen < room ? (uint32_t)u->inlen : room;

        memcpy(dbuf(u) + u->fill, u->in, n);
        u->fill += n;
        u->in += n;
        u->inlen -= n;
        if (u->fill == XFER_DBUF_SIZE) {
            direct_write(c, u, XFER_DBUF_SIZE);
            return false;
        }
    }
    return true;
}

static void submit_truncate(struct conn *c, struct upload *u)
{
    struct io_uring_sqe *sqe = conn_op_sqe(c, on_truncated);

    io_uring_prep_rw(RING_OP_FTRUNCATE, sqe, u->cur->fd, NULL, 0, u->cur->written);
    use_file(sqe, u->cur);
}

/* The body is all in: write the rest padded to the alignment, then cut the file to size. */
static void direct_finish(struct conn *c, struct upload *u)
{
    uint32_t len = (u->fill + XFER_ALIGN - 1) & ~(XFER_ALIGN - 1);

    u->finishing = true;
    u->cur->written = u->doff + u->fill;
    if (len == 0) {
        submit_truncate(c, u);
        return;
    }
    memset(dbuf(u) + u->fill, 0, len - u->fill);
    direct_write(c, u, len);
}

/* The socket or a buffer is ready again after a yield. */
static void direct_readable(struct conn *c, int res)
{
    struct upload *u = conn_rdata(c);

    if (res == -ETIMEDOUT) {
        /* Every buffer stayed lent for CONNECTION_TIMEOUT: the client may retry later. */
        fail(c, u, 503, "overloaded", "The server is busy; retry later.");
        conn_resume(c);
        return;
    }
    if (res < 0) {
        conn_close(c);
        return;
    }
    if (direct_borrow(c, u, direct_readable))
        direct_read(c, u);
}

/* A slow client: keep the unaligned rest aside, give the buffer back, wait for the socket. */
static void direct_yield(struct conn *c, struct upload *u)
{
    u->yielding = false;
    if (u->tail == NULL && posix_memalign((void **)&u->tail, XFER_ALIGN, XFER_ALIGN) != 0)
        log_oom();
    memcpy(u->tail, dbuf(u), u->fill); /* less than XFER_ALIGN */
    xfer_dbuf_put(u->rt->xfer, u->dbuf);
    u->dbuf = -1;
    conn_poll(c, POLLIN, direct_readable);
}

static void on_direct_write(struct conn *c, int res)
{
    struct upload *u = conn_rdata(c);
    uint32_t len = u->wlen_direct;

    if (res < 0 || (uint32_t)res != len) {
        /* O_DIRECT writes whole blocks: a short one is a full disk. */
        fail_errno(c, u, res < 0 ? res : -ENOSPC, "write");
        conn_resume(c);
        return;
    }
    met_add(&u->rt->ring->met.up_bytes_direct, u->fill < len ? u->fill : len);
    u->doff += len;
    if (u->fill > len)
        memmove(dbuf(u), dbuf(u) + len, u->fill - len);
    u->fill = u->fill > len ? u->fill - len : 0;
    if (u->finishing) {
        submit_truncate(c, u);
        return;
    }
    if (!conn_body_detached(c)) {
        /* Bytes received with the head: go on with the span, then with the connection. */
        if (direct_copy(c, u))
            conn_resume(c);
        return;
    }
    if (u->yielding) {
        direct_yield(c, u);
        return;
    }
    direct_read(c, u);
}

static void on_truncated(struct conn *c, int res)
{
    struct upload *u = conn_rdata(c);

    if (res < 0) {
        fail_errno(c, u, res, "truncate");
        conn_resume(c);
        return;
    }
    xfer_dbuf_put(u->rt->xfer, u->dbuf);
    u->dbuf = -1;
    /* Read from the socket by the route: the message ends here, route_body_end() follows. */
    if (conn_body_detached(c))
        conn_body_read(c);
    else
        end_file(c, u);
}

static void on_direct_read(struct conn *c, int res)
{
    struct upload *u = conn_rdata(c);
    uint32_t aligned;

    if (res == -EAGAIN) {
        /* The socket is empty: wait for it without the buffer (below). */
        res = 0;
    } else if (res <= 0) {
        /* The client went away mid-body (0) or the socket failed: nobody to answer. */
        conn_close(c);
        return;
    }
    u->fill += (uint32_t)res;
    u->left -= (uint64_t)res;
    if (res > 0)
        conn_io_progress(c, (uint64_t)res, true);
    if (u->left == 0) {
        direct_finish(c, u);
        return;
    }
    if (u->fill == XFER_DBUF_SIZE) {
        direct_write(c, u, XFER_DBUF_SIZE);
        return;
    }
    if ((uint32_t)res >= DIRECT_YIELD) {
        direct_read(c, u);
        return;
    }
    /*
     * A short read (or none): the client is slower than the disk. A buffer is never
     * held while the socket is waited for, or sixteen clients that trickle would
     * hold every buffer of the worker.
     */
    aligned = u->fill & ~(XFER_ALIGN - 1);
    u->yielding = true;
    if (aligned > 0)
        direct_write(c, u, aligned);
    else
        direct_yield(c, u);
}

/*
 * Read what the socket holds now into the buffer. MSG_DONTWAIT: an empty socket
 * completes with -EAGAIN instead of parking the read (and the buffer) in the
 * kernel until the client sends again.
 */
static void direct_read(struct conn *c, struct upload *u)
{
    uint32_t room = XFER_DBUF_SIZE - u->fill;
    uint32_t n = u->left < room ? (uint32_t)u->left : room;
    struct io_uring_sqe *sqe = conn_op_sqe(c, on_direct_read);

    io_uring_prep_recv(sqe, conn_fd(c), dbuf(u) + u->fill, n, MSG_DONTWAIT);
    sqe->flags |= IOSQE_FIXED_FILE;
}

/* The socket is ours: read what is left of the body into the buffer. */
static void direct_detached(struct conn *c, int res)
{
    struct upload *u = conn_rdata(c);

    (void)res;
    u->left = http_content_length(conn_parser(c));
    direct_read(c, u);
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

/* The rows are in: the files are the user's now; answer 201. */
static void recorded(struct upload *u)
{
    struct conn *c = conn_deref(u->rt->conns, u->conn);
    uint32_t i;

    for (i = 0; i < u->nfiles; i++)
        u->files[i].linked = false;
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
    if (keep) {
        met_inc(&u->rt->ring->met.up_kept);
        log_warn("upload outcome unknown, files kept for fsck", "first_id=%s files=%u error=%s",
                 u->files[0].id, u->nfiles, strerror(-u->insert_err));
    }
    for (i = 0; i < u->nfiles; i++) {
        if (u->files[i].linked && !keep)
            unlinkat(store_dirfd(), u->files[i].key, 0); /* an error path: a metadata syscall */
        u->files[i].linked = false;
    }
    if (c != NULL)
        route_error(c, conn_head(c), 503, "database_unavailable",
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
            u->files[i].id,  u->user, u->files[i].name, u->files[i].written, "queued",
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
            begin_file(c, u, name, (size_t)len);
            return FEED_OP;
        }
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

/* The page-cache path of a raw body of expected bytes: spliced, or written from the buffers. */
static enum up_mode cached_mode(const struct router *r, uint64_t expected)
{
    return r->cfg->splice_uploads && expected >= SPLICE_MIN ? MODE_SPLICE : MODE_BUFFERED;
}

/*
 * How a raw body of expected bytes (0: chunked or empty) reaches the file. A small
 * body is in the receive buffers by the time its file is open: a splice pair (two
 * io-wq hops after a poll) for its last few hundred bytes would cost more than it saves.
 */
static enum up_mode raw_mode(const struct router *r, uint64_t expected)
{
    if (expected == 0)
        return MODE_BUFFERED;
    if (r->cfg->direct_io_threshold > 0 && expected >= r->cfg->direct_io_threshold &&
        xfer_direct(r->xfer))
        return MODE_DIRECT;
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

enum conn_verdict route_upload_begin(struct conn *c, const char *user, const char *name,
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
        route_error(c, h, 507, "insufficient_storage", "The storage is too full for this file.",
                    true, "Retry-After: 5\r\n");
        return CONN_ANSWERED;
    }
    if (h->method == HTTP_POST && http_header(h, "content-type", &ctype)) {
        blen = mp_boundary(ctype.p, ctype.len, boundary);
        multipart = blen > 0;
        if (!multipart && ctype.len >= 10 && strncasecmp(ctype.p, "multipart/", 10) == 0) {
            route_error(c, h, 400, "bad_request", "A multipart body needs a valid boundary.", true,
                        NULL);
            return CONN_ANSWERED;
        }
    }
    if (multipart)
        maxfiles = r->cfg->max_files_per_request;
    if (multipart && expected > form_max(r)) {
        route_error(c, h, 413, "too_large",
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
    u->dbuf = -1;
    u->dirfd = -1;
    conn_set_rdata(c, u, upload_gone);
    conn_set_reap(c, upload_reap);
    if (!multipart) {
        u->mode = raw_mode(r, expected);
        if (u->mode == MODE_DIRECT) {
            /*
             * The buffer now or not at all: a body queued for one would hold its
             * receive buffers, a file and a slot while others write theirs.
             */
            u->dbuf = xfer_dbuf_get(u->rt->xfer, c, NULL);
            if (u->dbuf < 0) {
                met_inc(&r->ring->met.dbuf_fallbacks);
                u->mode = cached_mode(r, expected);
            }
        }
        /* Stop receiving now: what is not in the receive buffers yet is the route's to read. */
        if (u->mode == MODE_SPLICE)
            conn_detach_body(c, splice_begin);
        else if (u->mode == MODE_DIRECT)
            conn_detach_body(c, direct_detached);
        begin_file(c, u, name, strlen(name));
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
    if (u->body > u->body_max) {
        fail(c, u, 413, "too_large",
             u->mp != NULL ? "The form is larger than MAX_FILES_PER_REQUEST files of MAX_FILE_SIZE."
                           : "The file is larger than MAX_FILE_SIZE.");
        return CONN_ANSWERED;
    }
    if (u->mp == NULL && u->mode == MODE_DIRECT) {
        u->in = body.p;
        u->inlen = body.len;
        return direct_copy(c, u) ? CONN_ANSWERED : CONN_PENDING;
    }
    if (u->mp == NULL) {
        /* A chunked body is checked as it grows; a Content-Length one was at the door. */
        return write_span(c, u, body.p, body.len) ? CONN_PENDING : CONN_ANSWERED;
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
        if (u->mode == MODE_DIRECT && !u->finishing)
            direct_finish(c, u);
        else
            end_file(c, u);
        return CONN_PENDING;
    }
    if (mp_finish(u->mp) < 0) {
        fail(c, u, 400, "bad_request", "The multipart body ends before its final boundary.");
        return CONN_ANSWERED;
    }
    return insert_rows(c, u) ? CONN_PENDING : CONN_ANSWERED;
}
