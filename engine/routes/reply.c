/*
 * reply: response heads, error bodies, CORS lines and the access log; see
 * reply.h.
 */
#include "engine/routes/reply.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/core/cfg.h"
#include "engine/core/conn.h"
#include "engine/core/log.h"
#include "engine/routes/env.h"
#include "proto/json.h"

#define ERR_BODY_MAX 512
#define CORS_EXPOSE                                                                                \
    "Access-Control-Expose-Headers: Location, Upload-Offset, Upload-Length, Upload-Expires, "      \
    "Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Retry-After, RateLimit-Limit, "      \
    "RateLimit-Remaining, RateLimit-Reset\r\n"
#define CORS_EXTRA_MAX 1024

/* Write one access-log line for the request just answered. */
static void access_log(struct conn *c, const struct http_head *h, int status, size_t bytes)
{
    struct http_span path = {"", 0};
    const char *method = "-";

    if (h != NULL) {
        path = http_path(h);
        method = http_method_name(h);
    }
    log_info("access", "method=%s path=%.*s status=%d bytes=%zu dur_us=%llu worker=%u", method,
             (int)path.len, path.p, status, bytes, (unsigned long long)conn_elapsed_us(c),
             conn_worker(c));
}

/* Whether origin is in CORS_ORIGINS ("*" or a comma list of exact origins). */
static bool origin_allowed(const struct cfg *cfg, struct http_span origin)
{
    const char *p = cfg->cors_origins;

    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);
        while (n > 0 && (*p == ' ' || *p == '\t')) {
            p++;
            n--;
        }
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if ((n == 1 && *p == '*') || (n == origin.len && memcmp(p, origin.p, n) == 0))
            return true;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return false;
}

/*
 * The Access-Control-* lines for a /v1 request from an allowed browser
 * origin, followed by extra, into buf; returns what the head should carry.
 */
static const char *with_cors(struct conn *c, const struct http_head *h, const char *extra,
                             char buf[CORS_EXTRA_MAX])
{
    const struct cfg *cfg = router_of(c)->cfg;
    struct http_span path;
    struct http_span origin;
    bool any;
    int n;

    if (h == NULL)
        return extra;
    /* The path first: most responses (/healthz, /metrics) end here without a header scan. */
    path = http_path(h);
    if (path.len < 4 || memcmp(path.p, "/v1/", 4) != 0 || !http_header(h, "origin", &origin) ||
        origin.len > 256 || !origin_allowed(cfg, origin))
        return extra;
    any = strcmp(cfg->cors_origins, "*") == 0;
    n = snprintf(buf, CORS_EXTRA_MAX, "Access-Control-Allow-Origin: %.*s\r\n%s" CORS_EXPOSE "%s",
                 any ? 1 : (int)origin.len, any ? "*" : origin.p, any ? "" : "Vary: Origin\r\n",
                 extra != NULL ? extra : "");
    return n > 0 && n < CORS_EXTRA_MAX ? buf : extra;
}

void reply_respond(struct conn *c, const struct http_head *h, int status, const char *ctype,
                   const char *body, size_t body_len, bool head_only, bool close, const char *extra)
{
    char cors[CORS_EXTRA_MAX];
    struct http_resp r = {
        .status = status,
        .content_type = ctype,
        .content_length = body_len,
        .close = close || conn_closing(c),
        .date = conn_date(c),
        .extra = with_cors(c, h, extra, cors),
    };
    /* A 204 head has no Content-Length (http_write_head): a body would frame the next response. */
    size_t send_body = head_only || status == 204 ? 0 : body_len;
    char *out = conn_out_reserve(c, REPLY_HEAD_MAX + send_body);
    ssize_t n = http_write_head(out, REPLY_HEAD_MAX, &r);

    if (n < 0)
        abort(); /* REPLY_HEAD_MAX covers every head this server writes */
    if (send_body != 0)
        memcpy(out + n, body, send_body);
    conn_out_commit(c, (size_t)n + send_body);
    if (r.close)
        conn_close_after(c);
    conn_answered(c, status);
    access_log(c, h, status, (size_t)n + send_body);
}

void reply_head(struct conn *c, const struct http_head *h, int status, const char *ctype,
                uint64_t content_length, bool close, const char *extra)
{
    char cors[CORS_EXTRA_MAX];
    struct http_resp r = {
        .status = status,
        .content_type = ctype,
        .content_length = content_length,
        .close = close || conn_closing(c),
        .date = conn_date(c),
        .extra = with_cors(c, h, extra, cors),
    };
    char *out = conn_out_reserve(c, REPLY_HEAD_MAX);
    ssize_t n = http_write_head(out, REPLY_HEAD_MAX, &r);

    if (n < 0)
        abort(); /* REPLY_HEAD_MAX covers every head this server writes */
    conn_out_commit(c, (size_t)n);
    if (r.close)
        conn_close_after(c);
    conn_answered(c, status);
    access_log(c, h, status,
               (size_t)n + (h != NULL && h->method == HTTP_HEAD ? 0 : content_length));
}

void reply_error(struct conn *c, const struct http_head *h, int status, const char *code,
                 const char *message, bool close, const char *extra)
{
    char body[ERR_BODY_MAX];
    ssize_t n = json_error(body, sizeof(body), code, message);
    bool head_only = h != NULL && h->method == HTTP_HEAD;

    if (n < 0)
        abort(); /* messages here are short literals */
    reply_respond(c, h, status, REPLY_JSON, body, (size_t)n, head_only, close, extra);
}

void reply_db_error(struct conn *c, int err, bool close)
{
    const struct http_head *h = conn_head(c);

    if (err == -ETIMEDOUT)
        reply_error(c, h, 503, "database_timeout",
                    "The database did not answer within DB_QUERY_TIMEOUT; retry later.", close,
                    "Retry-After: 1\r\n");
    else if (err == -EAGAIN)
        reply_error(c, h, 503, "overloaded",
                    "Too many requests are waiting for the database; retry later.", close,
                    "Retry-After: 1\r\n");
    else if (err == -EINVAL)
        reply_error(c, h, 500, "internal_error", "The database refused the query.", close, NULL);
    else
        reply_error(c, h, 503, "database_unavailable",
                    "The database cannot be reached; retry later.", close, "Retry-After: 1\r\n");
}

void reply_preflight(struct conn *c, const struct http_head *h, bool close)
{
    /* No token, no body; with_cors() adds the origin lines. */
    reply_respond(c, h, 204, NULL, NULL, 0, false, close,
                  "Access-Control-Allow-Methods: GET, HEAD, PUT, POST, PATCH, DELETE, OPTIONS\r\n"
                  "Access-Control-Allow-Headers: Authorization, Content-Type, "
                  "Content-Disposition, X-Filename, X-Progress-Id, X-Priority, Upload-Offset, "
                  "Upload-Length, Upload-Metadata, Upload-Checksum, Upload-Concat, "
                  "Upload-Defer-Length, Tus-Resumable\r\n"
                  "Access-Control-Max-Age: 600\r\n");
}
