/*
 * req: what ringup-load says and how it reads the answers, as pure code over
 * byte spans: request heads for each scenario, the multipart framing around
 * a file, a small HTTP/1.1 response parser (status line, headers,
 * Content-Length, chunked, Connection: close, interim 1xx skipped), tiny
 * JSON field lookups for the 201 and metadata bodies, and the command-line
 * value parsers (URL, sizes). No I/O, no clock, no liburing, no allocation:
 * builders write into the caller's buffer, the parser into its own struct.
 */
#ifndef BENCH_LOAD_REQ_H
#define BENCH_LOAD_REQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REQ_HOST_MAX 32     /* "127.255.255.255:65535" and a NUL fit */
#define REQ_LINE_MAX 1024   /* longest status line, header line or chunk-size line */
#define REQ_KEEP_MAX 1024   /* first body bytes kept for the caller (JSON answers) */
#define REQ_LOC_MAX 256     /* longest Location value kept */
#define REQ_SIZES_MAX 16    /* entries of a --sizes distribution */
#define REQ_BOUNDARY_MAX 70 /* RFC 2046 */

/* What every request head carries. */
struct req_common {
    const char *host;  /* Host header value, "127.0.0.1:PORT" */
    const char *token; /* bearer token, or NULL for no Authorization header */
    bool close;        /* send Connection: close (one request per connection) */
};

/* A base URL: http://127.x.y.z[:PORT][/]. */
struct req_url {
    uint32_t addr;           /* IPv4 address, host byte order */
    uint16_t port;           /* TCP port, host byte order */
    char host[REQ_HOST_MAX]; /* "a.b.c.d:port", for the Host header */
};

/* A --sizes distribution: sizes with integer weights. */
struct req_sizes {
    unsigned n;                     /* entries used */
    uint64_t size[REQ_SIZES_MAX];   /* body bytes */
    uint64_t weight[REQ_SIZES_MAX]; /* relative weight, > 0 */
    uint64_t total;                 /* sum of weights */
};

/*
 * Parse a base URL. Returns 0, -EINVAL for anything but http://IPv4[:port][/]
 * (a literal dotted address; names are not resolved), or -EPERM for an
 * address outside 127.0.0.0/8.
 */
int req_parse_url(const char *s, struct req_url *u);

/* Parse "N", "Nk" (KiB) or "Nm" (MiB), also K/M and g/G. 0 or -EINVAL (syntax, overflow). */
int req_parse_size(const char *s, uint64_t *out);

/* Parse "SIZE:WEIGHT,SIZE:WEIGHT,...". 0 or -EINVAL. */
int req_parse_sizes(const char *s, struct req_sizes *d);

/* The size for a uniform random number r (any 64-bit value). */
uint64_t req_pick_size(const struct req_sizes *d, uint64_t r);

/*
 * Builders. Each writes a complete request head (ending in CRLF CRLF) into
 * out and returns its length, or -EMSGSIZE when cap is too small (out is
 * then unspecified). Nothing is NUL-terminated.
 */

/* PUT /v1/files/NAME with Content-Length: len (name must need no escaping). */
int req_put(char *out, size_t cap, const struct req_common *c, const char *name, uint64_t len);

/*
 * POST /v1/uploads, multipart/form-data with one part named "file" holding
 * file_len bytes: writes the head and the part's preamble (they go out
 * together); the caller then sends the file bytes and the epilogue of
 * req_multipart_epilogue(). Content-Length counts preamble, file and
 * epilogue. *head_len gets the length of the head alone (the rest is
 * preamble). Returns head + preamble length, or -EMSGSIZE.
 */
int req_multipart(char *out, size_t cap, const struct req_common *c, const char *boundary,
                  const char *filename, uint64_t file_len, size_t *head_len);

/* "\r\n--BOUNDARY--\r\n": the bytes after the file. Returns its length or -EMSGSIZE. */
int req_multipart_epilogue(char *out, size_t cap, const char *boundary);

/* The preamble length req_multipart() puts before the file (for Content-Length checks). */
size_t req_multipart_preamble_len(const char *boundary, const char *filename);

/* tus creation: POST /v1/tus/ with Tus-Resumable, Upload-Length: len, Content-Length: 0. */
int req_tus_create(char *out, size_t cap, const struct req_common *c, uint64_t len);

/*
 * tus PATCH of path (the Location of the creation) at offset with len body bytes,
 * Content-Type: application/offset+octet-stream.
 */
int req_tus_patch(char *out, size_t cap, const struct req_common *c, const char *path,
                  uint64_t offset, uint64_t len);

/* GET path. */
int req_get(char *out, size_t cap, const struct req_common *c, const char *path);

/* Response parser state (a field, so input may split anywhere). */
enum req_resp_state {
    REQ_RESP_STATUS,     /* reading the status line */
    REQ_RESP_HEADER,     /* reading header lines */
    REQ_RESP_BODY,       /* Content-Length body: length - body_seen bytes to go */
    REQ_RESP_EOF_BODY,   /* body delimited by the connection's close */
    REQ_RESP_CHUNK,      /* reading a chunk-size line */
    REQ_RESP_CHUNK_DATA, /* inside a chunk: chunk_left bytes to go */
    REQ_RESP_CHUNK_END,  /* the CRLF after a chunk's data */
    REQ_RESP_TRAILER,    /* trailer lines after the last chunk */
    REQ_RESP_DONE,       /* a complete response; req_resp_init() before the next */
};

/* One response being parsed; the caller owns it (one per connection). */
struct req_resp {
    enum req_resp_state state;  /* where the parser is */
    int status;                 /* status code (last final response), 0 before the status line */
    bool close;                 /* the server will close: Connection: close, or HTTP/1.0 */
    bool keep_alive;            /* Connection: keep-alive seen (matters for HTTP/1.0) */
    bool http10;                /* status line said HTTP/1.0 */
    bool has_length;            /* a Content-Length was given */
    bool chunked;               /* Transfer-Encoding: chunked */
    uint64_t length;            /* Content-Length value */
    uint64_t body_seen;         /* body bytes so far (decoded, without chunk framing) */
    uint64_t chunk_left;        /* bytes left in the current chunk */
    uint64_t head_bytes;        /* bytes of the head (status line to the empty line) */
    uint32_t line_len;          /* bytes in line */
    uint32_t keep_len;          /* bytes in keep */
    uint32_t loc_len;           /* bytes in location */
    char line[REQ_LINE_MAX];    /* the line being assembled */
    char keep[REQ_KEEP_MAX];    /* the first body bytes */
    char location[REQ_LOC_MAX]; /* Location value (cut at REQ_LOC_MAX - 1), NUL-terminated */
};

/* Ready the parser for a new response. */
void req_resp_init(struct req_resp *r);

/*
 * Feed n bytes. Returns the bytes consumed (state REQ_RESP_DONE once a whole
 * response was read; bytes after it are left unconsumed for the next one),
 * -EMSGSIZE for a line past REQ_LINE_MAX, or -EBADMSG for a malformed
 * response. Interim 1xx responses are skipped.
 */
int req_resp_feed(struct req_resp *r, const char *p, size_t n);

/*
 * The connection reached end of file. Returns 0 when that completes the
 * response (a body delimited by close), -EBADMSG otherwise (truncated).
 */
int req_resp_eof(struct req_resp *r);

/* True once a whole response was parsed. */
static inline bool req_resp_done(const struct req_resp *r)
{
    return r->state == REQ_RESP_DONE;
}

/*
 * The string value of "key" in a JSON text (its first occurrence as a key),
 * copied NUL-terminated into out. Returns its length, -ENOENT (absent or not
 * a plain string: escapes are refused), or -EMSGSIZE (too long for cap).
 */
int req_json_str(const char *doc, size_t len, const char *key, char *out, size_t cap);

/* The unsigned integer value of "key". 0, -ENOENT or -EINVAL (not an integer). */
int req_json_u64(const char *doc, size_t len, const char *key, uint64_t *out);

#endif /* BENCH_LOAD_REQ_H */
