/*
 * download: GET/HEAD /v1/files/{id}/content. The file is opened
 * through the ring; once the head is sent, the body is spliced file -> pooled
 * pipe -> socket and never enters user space. When the worker's pipes are all
 * lent out (many slow readers), the download is read in steps into the
 * connection's output instead, never more than CONN_OUT_LOW ahead of what the
 * client has taken (conn_on_drain), so a slow reader holds one chunk of
 * memory, not the file.
 */
#include "engine/routes/download.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <liburing.h>

#include "engine/core/conn.h"
#include "engine/core/log.h"
#include "engine/core/ring.h"
#include "engine/routes/env.h"
#include "engine/routes/reply.h"
#include "engine/store/store.h"
#include "engine/store/xfer.h"

#define DL_CHUNK 65536 /* bytes read per step */
#define DL_EXTRA_MAX 1536

struct download {
    int fd;       /* the stored file, -1 before it is open */
    int status;   /* 200 or 206 */
    bool close;   /* the response closes the connection */
    uint64_t pos; /* next byte to read */
    uint64_t end; /* one past the last byte to send */
    char *buf;    /* buffered path: DL_CHUNK bytes the read in flight fills, NULL before */
    struct router *rt;
    uint64_t conn;         /* conn_ref() of the reader, to leave xfer's queues */
    struct xfer_pipe pipe; /* lent while a splice pair runs */
    bool piped;
    uint32_t in_pipe; /* bytes in the pipe not yet sent */
    char ctype[160];  /* Content-Type */
    char key[STORE_KEY_MAX];
    char extra[DL_EXTRA_MAX]; /* ETag, Content-Range, Content-Disposition, ... */
};

static void dl_free(void *p)
{
    struct download *d = p;

    if (d->fd >= 0)
        close(d->fd);
    xfer_cancel(d->rt->xfer, d->conn);
    if (d->piped)
        xfer_pipe_put(d->rt->xfer, d->pipe, d->in_pipe == 0);
    free(d->buf);
    free(d);
}

static void on_open(struct conn *c, int res);

/* The connection closed first: a splice cut short may have left bytes in the pipe. */
static void dl_gone(void *p)
{
    struct download *d = p;

    if (d->piped)
        d->in_pipe = 1; /* closed, not pooled */
    dl_free(d);
}

/* The connection closed with the open in flight: keep the descriptor for dl_gone(). */
static void dl_reap(void *p, conn_op_fn fn, int res)
{
    struct download *d = p;

    if (fn == on_open && res >= 0)
        d->fd = res;
}

/* Everything sent (or queued): the request is over. */
static void finish(struct conn *c, struct download *d)
{
    conn_set_rdata(c, NULL, NULL);
    dl_free(d);
    conn_resume(c);
}

/* The name as an ASCII-only quoted-string fallback and an RFC 5987 filename*. */
static size_t disposition(char *out, size_t cap, const char *name)
{
    static const char hex[] = "0123456789ABCDEF";
    char ascii[255 + 1];
    char enc[3 * 255 + 1];
    size_t a = 0;
    size_t e = 0;
    const unsigned char *p;
    int n;

    for (p = (const unsigned char *)name; *p != '\0' && a < sizeof(ascii) - 1; p++)
        ascii[a++] = (*p < 0x20 || *p >= 0x7f || *p == '"' || *p == '\\') ? '_' : (char)*p;
    ascii[a] = '\0';
    for (p = (const unsigned char *)name; *p != '\0' && e < sizeof(enc) - 4; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '.' || *p == '-' || *p == '_' || *p == '~') {
            enc[e++] = (char)*p;
        } else {
            enc[e++] = '%';
            enc[e++] = hex[*p >> 4];
            enc[e++] = hex[*p & 15];
        }
    }
    enc[e] = '\0';
    n = snprintf(out, cap,
                 "Content-Disposition: attachment; filename=\"%s\"; filename*=UTF-8''%s\r\n", ascii,
                 enc);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

static void on_read(struct conn *c, int res);

/*
 * Read the next step, once the client has taken enough. The read fills the
 * download's own buffer, never reserved output space: the output chain is
 * sent and freed as the client takes it, while the read may complete later
 * (a file not in the page cache), so output space is reserved only when the
 * bytes are there (on_read).
 */
static void pump(struct conn *c, int res)
{
    struct download *d = conn_rdata(c);
    struct io_uring_sqe *sqe;
    uint64_t want = d->end - d->pos;

    (void)res;
    if (want > DL_CHUNK)
        want = DL_CHUNK;
    if (d->buf == NULL) {
        d->buf = malloc(DL_CHUNK);
        if (d->buf == NULL)
            log_oom();
    }
    sqe = conn_op_sqe(c, on_read);
    io_uring_prep_read(sqe, d->fd, d->buf, (unsigned)want, d->pos);
}

static void on_read(struct conn *c, int res)
{
    struct download *d = conn_rdata(c);

    if (res <= 0) {
        /* The head is out: all that is left is to cut the response short. */
        log_error("download read failed", "key=%s error=%s", d->key,
                  res == 0 ? "file shorter than its row" : strerror(-res));
        conn_set_rdata(c, NULL, NULL);
        dl_free(d);
        conn_close(c);
        return;
    }
    memcpy(conn_out_reserve(c, (size_t)res), d->buf, (size_t)res);
    conn_out_commit(c, (size_t)res);
    met_add(&d->rt->ring->met.dl_bytes_buffered, (uint64_t)res);
    d->pos += (uint64_t)res;
    conn_flush(c);
    if (d->pos >= d->end) {
        finish(c, d);
        return;
    }
    conn_on_drain(c, pump);
}

/* ---- splice: file -> pooled pipe -> socket ---- */

static void on_spliced_in(struct conn *c, int res);
static void on_spliced_out(struct conn *c, int res);

/* The head is sent: splice the next piece of the file into a pipe. */
static void splice_next(struct conn *c, int res)
{
    struct download *d = conn_rdata(c);
    struct io_uring_sqe *sqe;
    uint64_t want = d->end - d->pos;
    int err;

    (void)res;
    if (!d->piped && !xfer_pipe_get(d->rt->xfer, &d->pipe, NULL, NULL, 0, &err)) {
        /* Every pipe is lent (or none can be made): read the rest through the output. */
        conn_route_sends(c, false);
        pump(c, 0);
        return;
    }
    d->piped = true;
    if (want > d->rt->xfer->pipe_size)
        want = d->rt->xfer->pipe_size;
    sqe = conn_op_sqe(c, on_spliced_in);
    io_uring_prep_splice(sqe, d->fd, (int64_t)d->pos, d->pipe.wr, -1, (unsigned)want,
                         SPLICE_F_MOVE);
}

static void submit_splice_out(struct conn *c, struct download *d)
{
    struct io_uring_sqe *sqe = conn_op_sqe(c, on_spliced_out);

    /* Non-blocking on the socket: an io-wq worker never waits for a slow reader. */
    io_uring_prep_splice(sqe, d->pipe.rd, -1, conn_fd(c), -1, d->in_pipe,
                         SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    sqe->flags |= IOSQE_FIXED_FILE;
}

/* The socket has room again. */
static void on_writable(struct conn *c, int res)
{
    struct download *d = conn_rdata(c);

    if (res < 0) {
        conn_close(c);
        return;
    }
    submit_splice_out(c, d);
}

static void on_spliced_in(struct conn *c, int res)
{
    struct download *d = conn_rdata(c);

    if (res <= 0) {
        log_error("download read failed", "key=%s error=%s", d->key,
                  res == 0 ? "file shorter than its row" : strerror(-res));
        conn_close(c);
        return;
    }
    d->in_pipe = (uint32_t)res;
    submit_splice_out(c, d);
}

static void on_spliced_out(struct conn *c, int res)
{
    struct download *d = conn_rdata(c);

    if (res == -EAGAIN) {
        conn_poll(c, POLLOUT, on_writable);
        return;
    }
    if (res <= 0) {
        /* The client went away: the head is out, nothing left to say. */
        conn_close(c);
        return;
    }
    conn_io_progress(c, (uint64_t)res, false);
    met_add(&d->rt->ring->met.dl_bytes_spliced, (uint64_t)res);
    d->in_pipe -= (uint32_t)res;
    d->pos += (uint64_t)res;
    if (d->in_pipe > 0) {
        submit_splice_out(c, d);
        return;
    }
    xfer_pipe_put(d->rt->xfer, d->pipe, true);
    d->piped = false;
    if (d->pos < d->end) {
        splice_next(c, 0);
        return;
    }
    conn_route_sends(c, false);
    finish(c, d);
}

/* The head is on the wire: the body follows by splice. */
static void head_sent(struct conn *c, int res)
{
    (void)res;
    conn_route_sends(c, true);
    splice_next(c, 0);
}

static void on_open(struct conn *c, int res)
{
    struct download *d = conn_rdata(c);
    const struct http_head *h = conn_head(c);

    if (res < 0) {
        bool close = d->close;
        log_error("stored file missing", "key=%s error=%s", d->key, strerror(-res));
        conn_set_rdata(c, NULL, NULL);
        dl_free(d);
        reply_error(c, h, res == -ENOENT ? 404 : 500,
                    res == -ENOENT ? "not_found" : "internal_error",
                    res == -ENOENT ? "No such file." : "The file cannot be read.", close, NULL);
        conn_resume(c);
        return;
    }
    d->fd = res;
    reply_head(c, h, d->status, d->ctype, d->end - d->pos, d->close, d->extra);
    if (h->method == HTTP_HEAD || d->pos >= d->end) {
        finish(c, d);
        return;
    }
    conn_flush(c);
    conn_on_sent(c, head_sent);
}

enum conn_verdict download_begin(struct conn *c, const char *key, uint64_t size, const char *name,
                                 const char *mime, const char *sha256, bool close)
{
    const struct http_head *h = conn_head(c);
    struct io_uring_sqe *sqe;
    struct download *d;
    struct http_span range;
    uint64_t first = 0;
    uint64_t last = size > 0 ? size - 1 : 0;
    size_t x = 0;
    int r = -ENOENT;

    if (http_header(h, "range", &range))
        r = http_range(range.p, range.len, size, &first, &last);
    if (r == -ERANGE) {
        char extra[64];
        snprintf(extra, sizeof(extra), "Content-Range: bytes */%llu\r\n", (unsigned long long)size);
        reply_error(c, h, 416, "range_not_satisfiable", "The range is outside the file.", close,
                    extra);
        return CONN_ANSWERED;
    }
    d = calloc(1, sizeof(*d));
    if (d == NULL)
        log_oom();
    d->fd = -1;
    d->rt = router_of(c);
    d->close = close;
    d->status = r == 0 ? 206 : 200;
    d->pos = r == 0 ? first : 0;
    d->end = r == 0 ? last + 1 : size;
    snprintf(d->key, sizeof(d->key), "%s", key);
    snprintf(d->ctype, sizeof(d->ctype), "%s", mime != NULL ? mime : "application/octet-stream");
    x += (size_t)snprintf(d->extra + x, sizeof(d->extra) - x,
                          "Accept-Ranges: bytes\r\nCache-Control: private, max-age=3600\r\n");
    if (sha256 != NULL)
        x += (size_t)snprintf(d->extra + x, sizeof(d->extra) - x, "ETag: \"%s\"\r\n", sha256);
    if (r == 0)
        x += (size_t)snprintf(d->extra + x, sizeof(d->extra) - x,
                              "Content-Range: bytes %llu-%llu/%llu\r\n", (unsigned long long)first,
                              (unsigned long long)last, (unsigned long long)size);
    disposition(d->extra + x, sizeof(d->extra) - x, name);
    d->conn = conn_ref(c);
    conn_set_rdata(c, d, dl_gone);
    conn_set_reap(c, dl_reap);
    sqe = conn_op_sqe(c, on_open);
    io_uring_prep_openat(sqe, store_dirfd(), d->key, O_RDONLY | O_CLOEXEC, 0);
    return CONN_PENDING;
}
