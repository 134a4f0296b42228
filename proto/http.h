/*
 * http: HTTP/1.1 request parsing over llhttp (strict, no lenient flags) and
 * response head formatting. Pure code over byte spans: no I/O, no clock, no
 * allocation. The caller owns every buffer.
 *
 * A connection embeds one struct http_parser for its whole life. For each
 * request the caller attaches a struct http_head (the request line and the
 * header block are copied into it, since they may arrive split over several
 * receive buffers) and feeds bytes with http_feed(), which stops at each event:
 * head complete, a body span, message complete. Body bytes are never copied:
 * a body span points into the fed data.
 */
#ifndef PROTO_HTTP_H
#define PROTO_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <llhttp.h>

#define HTTP_HEAD_MAX 16384  /* request line + header block, bytes (431 past it) */
#define HTTP_MAX_HEADERS 100 /* header lines per request (431 past it) */

/* A span into caller memory. */
struct http_span {
    const char *p;
    size_t len;
};

/* One header line, as offsets into struct http_head.buf. */
struct http_hdr {
    uint16_t name_off;
    uint16_t name_len;
    uint16_t val_off;
    uint16_t val_len;
};

/*
 * Storage for one request's head. Owned by the caller (a per-worker pool),
 * attached with http_begin(), valid until the caller detaches it. Large
 * (~17 KiB): only requests in progress hold one.
 */
struct http_head {
    uint32_t len;       /* bytes used in buf */
    uint32_t cap;       /* bytes buf can hold: HTTP_HEAD_MAX, or len once compacted */
    uint16_t url_len;   /* the request target is buf[0..url_len) */
    uint16_t nhdr;      /* headers in hdr[] */
    uint8_t method;     /* enum llhttp_method */
    uint8_t http_minor; /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
    struct http_hdr hdr[HTTP_MAX_HEADERS];
    char buf[HTTP_HEAD_MAX];
};

enum http_ev_kind {
    HTTP_EV_NONE, /* all input consumed, need more */
    HTTP_EV_HEAD, /* request line and headers complete; see http_head */
    HTTP_EV_DONE, /* message complete (after any body) */
};

/* What one http_feed() call found. body is reported before kind. */
struct http_ev {
    enum http_ev_kind kind;
    struct http_span body; /* body bytes in the fed data, len 0 if none */
};

/* Per-connection parser state. */
struct http_parser {
    llhttp_t ll;            /* the llhttp state machine; ll.data points here */
    struct http_head *head; /* storage for the request being parsed, or NULL */
    struct http_span body;  /* body span found by the current feed */
    uint32_t head_raw;      /* raw head bytes seen for this request */
    int err;                /* error a callback recorded, negative errno */
    const char *why;        /* what our own refusal (not llhttp's) found, for logs, or NULL */
    uint8_t in_field;       /* 1 while a header name is being copied */
    uint8_t begun;          /* the current request has begun */
    uint8_t head_done;      /* headers of the current request are complete */
    uint8_t msg_done;       /* the current message is complete */
    uint8_t in_trailers;    /* the last chunk was seen: only trailers and CRLF are left */
    char tail[2];           /* the last two bytes consumed, for the CRLF checks */
};

/* Initialise a connection's parser (requests only). */
void http_init(struct http_parser *p);

/* Attach empty head storage for the next request. Ownership stays with the caller. */
void http_begin(struct http_parser *p, struct http_head *h);

/*
 * Bytes of h that hold its request line and headers: a copy of that many
 * bytes, with cap set to len, is a complete head (nothing more can be added
 * to it). The caller may swap such a copy in for p->head once the head is
 * complete and the body has a Content-Length (no trailers follow).
 */
size_t http_head_size(const struct http_head *h);

/*
 * Feed bytes. Stops after the first event and returns the number of bytes
 * consumed; call again with the rest (possibly zero bytes: an event may be
 * pending with nothing left to consume). Returns -EBADMSG for a malformed or
 * smuggling-shaped request (400; obs-fold included), -EMSGSIZE when the head
 * passes HTTP_HEAD_MAX or HTTP_MAX_HEADERS (431), -ENOTSUP for CONNECT or a
 * Transfer-Encoding other than a lone "chunked" (501). An
 * Upgrade request is parsed as plain HTTP/1.1: no upgrade is offered. After
 * an error the parser is dead (every later call returns the same error):
 * close the connection. Requires attached head storage.
 */
ssize_t http_feed(struct http_parser *p, const char *data, size_t len, struct http_ev *ev);

/*
 * The rest of a Content-Length body was read around the parser (spliced
 * from the socket to a file): the message is complete. The parser is reset
 * for the next request, as after HTTP_EV_DONE. Returns 0, or -EINVAL when the
 * request in progress has no Content-Length body under way (nothing changes).
 */
int http_body_done(struct http_parser *p);

/* True once the request in progress has begun (any byte of it consumed). */
bool http_started(const struct http_parser *p);

/* llhttp's reason for the last error, for logs. */
const char *http_error_reason(const struct http_parser *p);

/* After HTTP_EV_HEAD: whether the connection may stay open after this request. */
bool http_keep_alive(const struct http_parser *p);

/* After HTTP_EV_HEAD: true if a body follows (Content-Length > 0 or chunked). */
bool http_has_body(const struct http_parser *p);

/* After HTTP_EV_HEAD: true for Transfer-Encoding: chunked. */
bool http_chunked(const struct http_parser *p);

/* After HTTP_EV_HEAD: Content-Length, or 0 when absent or chunked. */
uint64_t http_content_length(const struct http_parser *p);

/* The request target and its path part (before '?'). */
struct http_span http_url(const struct http_head *h);
struct http_span http_path(const struct http_head *h);

/*
 * The raw value of ?key=value in the request target (the first match, no
 * percent-decoding: callers validate what they take). Returns true and fills
 * *val, or false.
 */
bool http_query_param(const struct http_head *h, const char *key, struct http_span *val);

/*
 * A Range header value against a resource of size bytes: one range of the
 * "bytes" unit ("a-b", "a-", "-n"). Returns 0 with [*first, *last]
 * (inclusive), -ERANGE when it cannot be satisfied (416), or -ENOENT when the
 * header is to be ignored (another unit, several ranges, malformed: RFC 9110
 * lets a server serve the whole resource then).
 */
int http_range(const char *v, size_t n, uint64_t size, uint64_t *first, uint64_t *last);

/* The method's name ("GET"). */
const char *http_method_name(const struct http_head *h);

/*
 * Find a header by name (ASCII case-insensitive); the first match. Returns
 * true and fills *val, or false.
 */
bool http_header(const struct http_head *h, const char *name, struct http_span *val);

/* Standard reason phrase for a status ("Not Found"), "Unknown" if none. */
const char *http_reason(int status);

/* What a response head says; the caller formats the body. */
struct http_resp {
    int status;
    const char *content_type; /* NULL: no Content-Type */
    uint64_t content_length;
    bool close;        /* send Connection: close */
    const char *date;  /* IMF-fixdate from the caller's clock, NULL: none */
    const char *extra; /* extra header lines, each ending "\r\n", or NULL */
};

/*
 * Write a response head into out. A 1xx or 204 head carries no
 * Content-Length (RFC 9110 8.6), whatever r says. Returns the bytes written,
 * or -ENOSPC if cap is too small (out is then unspecified).
 */
ssize_t http_write_head(char *out, size_t cap, const struct http_resp *r);

/* Format an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") into out[30]. */
void http_format_date(char out[30], int64_t unix_seconds);

#endif /* PROTO_HTTP_H */
