/*
 * reply: how every route answers. Response heads (with the CORS lines of a
 * /v1 request from an allowed origin), API.md's JSON error bodies, the
 * preflight answer, and one access-log line per response. Ring thread.
 */
#ifndef ENGINE_ROUTES_REPLY_H
#define ENGINE_ROUTES_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/http.h"

struct conn;

#define REPLY_JSON "application/json" /* Content-Type of every JSON body */
#define REPLY_HEAD_MAX 4096 /* the largest response head (extra and CORS lines included) */

/*
 * Queue a complete response (head, and body unless head_only: HEAD requests
 * still announce the body's length), mark the request answered, log it.
 * close adds Connection: close and closes after sending. extra: header
 * lines ("Name: value\r\n"...) or NULL. h may be NULL (no head parsed).
 */
void reply_respond(struct conn *c, const struct http_head *h, int status, const char *ctype,
                   const char *body, size_t body_len, bool head_only, bool close,
                   const char *extra);

/*
 * Queue only a response head (the body follows through conn_out_reserve());
 * marks the request answered and logs it with content_length as its size.
 */
void reply_head(struct conn *c, const struct http_head *h, int status, const char *ctype,
                uint64_t content_length, bool close, const char *extra);

/* An error response with API.md's JSON body {"error":{"code","message"}}. */
void reply_error(struct conn *c, const struct http_head *h, int status, const char *code,
                 const char *message, bool close, const char *extra);

/*
 * The answer to a failed database query (db_cb's err, or db_query()'s
 * refusal): 503 database_timeout, overloaded (-EAGAIN: its wait queue is
 * full), database_unavailable, or 500 internal_error (-EINVAL: the server
 * refused the statement). Answers the current request (conn_head()).
 */
void reply_db_error(struct conn *c, int err, bool close);

/* 204 to a browser's CORS preflight of a /v1 route (no token needed). */
void reply_preflight(struct conn *c, const struct http_head *h, bool close);

#endif /* ENGINE_ROUTES_REPLY_H */
