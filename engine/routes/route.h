/*
 * route: request handlers, the only engine code that speaks HTTP statuses
 * and headers. conn calls in at each request event and for connection-level
 * failures; handlers answer through conn_out_reserve()/conn_out_commit().
 */
#ifndef ENGINE_ROUTES_ROUTE_H
#define ENGINE_ROUTES_ROUTE_H

#include <stdbool.h>

#include "engine/core/conn.h"
#include "proto/http.h"

struct conn;

/* ---- shared by the route_*.c files ---- */

/*
 * Queue a complete response (head, and body unless head_only: HEAD requests
 * still announce the body's length), mark the request answered, log it.
 * close adds Connection: close and closes after sending.
 */
void route_respond(struct conn *c, const struct http_head *h, int status, const char *ctype,
                   const char *body, size_t body_len, bool head_only, bool close,
                   const char *extra);

#define ROUTE_JSON "application/json" /* Content-Type of every JSON body */
#define ROUTE_HEAD_MAX 4096 /* the largest response head (extra and CORS lines included) */

/*
 * Queue only a response head (the body follows through conn_out_reserve());
 * marks the request answered and logs it with content_length as its size.
 */
void route_respond_head(struct conn *c, const struct http_head *h, int status, const char *ctype,
                        uint64_t content_length, bool close, const char *extra);

/* An error response with API.md's JSON body {"error":{"code","message"}}. */
void route_error(struct conn *c, const struct http_head *h, int status, const char *code,
                 const char *message, bool close, const char *extra);

/*
 * The /v1 routes (route_files.c); close: the response must close the
 * connection; skipped: as for route_head().
 */
enum conn_verdict route_v1(struct conn *c, const struct http_head *h, const struct http_parser *p,
                           bool skipped, bool close);

/*
 * Start storing the body of an authenticated PUT (route_upload.c): expected
 * is its Content-Length (0 if chunked), for the free-space check.
 */
enum conn_verdict route_upload_begin(struct conn *c, const char *user, const char *name,
                                     uint64_t expected, bool close);

/*
 * Send a stored file (route_download.c) to an authenticated GET/HEAD of
 * /v1/files/{id}/content: key, size, name, mime (NULL: octet-stream) and
 * sha256 (NULL until known) come from its row. Honours Range.
 */
enum conn_verdict route_download_begin(struct conn *c, const char *key, uint64_t size,
                                       const char *name, const char *mime, const char *sha256,
                                       bool close);

#endif /* ENGINE_ROUTES_ROUTE_H */
