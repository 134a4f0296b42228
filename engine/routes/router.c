/*
 * route_http: the dispatcher, the service routes (/healthz, /metrics) and
 * the error responses of API.md.
 */
#include "engine/routes/router.h"
#include "engine/routes/route.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/core/conn.h"
#include "engine/core/log.h"
#include "engine/core/met.h"
#include "engine/core/ring.h"
#include "proto/json.h"
#include "proto/prom.h"

#define ERR_BODY_MAX 512
#define METRICS_MAX (256 * 1024) /* /metrics body */

static const char health_body[] = "{\"status\":\"ok\"}";

static bool span_is(struct http_span s, const char *lit)
{
    size_t n = strlen(lit);

    return s.len == n && memcmp(s.p, lit, n) == 0;
}

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

/*
 * Queue a complete response. body may be NULL for HEAD (content_length then
 * still announces the GET size). Marks the request answered and logs it.
 */
#define CORS_EXPOSE                                                                                \
    "Access-Control-Expose-Headers: Location, Upload-Offset, Upload-Length, Upload-Expires, "      \
    "Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Retry-After, RateLimit-Limit, "      \
    "RateLimit-Remaining, RateLimit-Reset\r\n"
#define CORS_EXTRA_MAX 1024

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

void route_respond(struct conn *c, const struct http_head *h, int status, const char *ctype,
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
    char *out = conn_out_reserve(c, ROUTE_HEAD_MAX + send_body);
    ssize_t n = http_write_head(out, ROUTE_HEAD_MAX, &r);

    if (n < 0)
        abort(); /* ROUTE_HEAD_MAX covers every head this server writes */
    if (send_body != 0)
        memcpy(out + n, body, send_body);
    conn_out_commit(c, (size_t)n + send_body);
    if (r.close)
        conn_close_after(c);
    conn_answered(c, status);
    access_log(c, h, status, (size_t)n + send_body);
}

void route_respond_head(struct conn *c, const struct http_head *h, int status, const char *ctype,
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
    char *out = conn_out_reserve(c, ROUTE_HEAD_MAX);
    ssize_t n = http_write_head(out, ROUTE_HEAD_MAX, &r);

    if (n < 0)
        abort(); /* ROUTE_HEAD_MAX covers every head this server writes */
    conn_out_commit(c, (size_t)n);
    if (r.close)
        conn_close_after(c);
    conn_answered(c, status);
    access_log(c, h, status,
               (size_t)n + (h != NULL && h->method == HTTP_HEAD ? 0 : content_length));
}

void route_error(struct conn *c, const struct http_head *h, int status, const char *code,
                 const char *message, bool close, const char *extra)
{
    char body[ERR_BODY_MAX];
    ssize_t n = json_error(body, sizeof(body), code, message);
    bool head_only = h != NULL && h->method == HTTP_HEAD;

    if (n < 0)
        abort(); /* messages here are short literals */
    route_respond(c, h, status, ROUTE_JSON, body, (size_t)n, head_only, close, extra);
}

static void route_fail(struct conn *c, int err, const struct http_head *h)
{
    switch (err) {
    case -EMSGSIZE:
        route_error(c, h, 431, "headers_too_large",
                    "The request line and headers exceed 16384 bytes or 100 lines.", true, NULL);
        break;
    case -ETIMEDOUT:
        route_error(c, h, 408, "request_timeout",
                    "The request did not arrive within CONNECTION_TIMEOUT.", true, NULL);
        break;
    case -ENOTSUP:
        /* The parser refuses both alike, before the head: h is NULL, the body unread. */
        route_error(c, h, 501, "not_implemented",
                    "CONNECT and transfer codings other than chunked are not supported.", true,
                    NULL);
        break;
    case -EBUSY:
        route_error(c, h, 503, "overloaded", "Too many connections; retry later.", true,
                    "Retry-After: 1\r\n");
        break;
    default:
        route_error(c, h, 400, "bad_request", "The request is not valid HTTP/1.1.", true, NULL);
        break;
    }
}

static void method_not_allowed(struct conn *c, const struct http_head *h, bool close,
                               const char *allow)
{
    route_error(c, h, 405, "method_not_allowed", "This route does not take that method.", close,
                allow);
}

static void route_healthz(struct conn *c, const struct http_head *h, bool close)
{
    if (h->method != HTTP_GET && h->method != HTTP_HEAD) {
        method_not_allowed(c, h, close, "Allow: GET, HEAD\r\n");
        return;
    }
    route_respond(c, h, 200, ROUTE_JSON, health_body, sizeof(health_body) - 1,
                  h->method == HTTP_HEAD, close, "Cache-Control: no-store\r\n");
}

static void route_metrics(struct conn *c, const struct http_head *h, bool close)
{
    struct prom_buf b;

    if (h->method != HTTP_GET && h->method != HTTP_HEAD) {
        method_not_allowed(c, h, close, "Allow: GET, HEAD\r\n");
        return;
    }
    b.p = malloc(METRICS_MAX);
    if (b.p == NULL)
        log_oom();
    b.len = 0;
    b.cap = METRICS_MAX;
    b.full = false;
    met_render(&b);
    route_respond(c, h, 200, PROM_CONTENT_TYPE, b.p, b.len, h->method == HTTP_HEAD, close,
                  "Cache-Control: no-store\r\n");
    free(b.p);
}

static enum conn_verdict route_head(struct conn *c, const struct http_head *h,
                                    const struct http_parser *p, bool skipped)
{
    struct http_span path = http_path(h);
    bool close = !http_keep_alive(p) || conn_closing(c);

    if (path.len >= 4 && memcmp(path.p, "/v1/", 4) == 0)
        return route_v1(c, h, p, skipped, close);
    /*
     * These routes take no body: skip a small one first; past the skip limit,
     * answer at once and close rather than read it all.
     */
    if (!skipped && http_has_body(p)) {
        if (http_chunked(p) || http_content_length(p) <= CONN_DISCARD_MAX)
            return CONN_SKIP_BODY;
        close = true;
    }
    if (span_is(path, "/healthz"))
        route_healthz(c, h, close);
    else if (span_is(path, "/metrics"))
        route_metrics(c, h, close);
    else
        route_error(c, h, 404, "not_found", "No route matches this path.", close, NULL);
    return CONN_ANSWERED;
}

const struct conn_handler router_handler = {.head = route_head, .fail = route_fail};
