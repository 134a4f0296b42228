/*
 * router: every route in one table, matched by method and path, then run
 * through explicit phases (as nginx's phase engine):
 *
 *   parse    the route's own checks of the request (query, length, name),
 *            before auth: a malformed request answers the same with or
 *            without a token, and an upload too large answers before its body
 *   auth     who asks (access.c); may wait for a token lookup
 *   limits   whether it may run now (limits.c): rate limits, backpressure
 *   handler  the route
 *
 * Each phase goes on, answers, or answers later (ROUTE_PENDING, then
 * route_continue() resumes the request at the next phase). Also here: the
 * CORS preflight, 404 and 405 (Allow from the table), what is done with a
 * body nobody takes, the service routes (/healthz, /metrics), and the
 * answers to connection-level failures.
 */
#include "engine/routes/router.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/core/conn.h"
#include "engine/core/log.h"
#include "engine/core/met.h"
#include "engine/routes/access.h"
#include "engine/routes/files.h"
#include "engine/routes/intake.h"
#include "engine/routes/limits.h"
#include "engine/routes/progress.h"
#include "engine/routes/reply.h"
#include "proto/prom.h"

#define METRICS_MAX (256 * 1024) /* /metrics body */
#define ALLOW_MAX 96             /* the longest Allow line */

/* Methods a route takes, as bits of a mask. */
enum {
    M_GET = 1 << 0, /* and HEAD */
    M_PUT = 1 << 1,
    M_POST = 1 << 2,
    M_PATCH = 1 << 3,
    M_DELETE = 1 << 4,
    M_OPTIONS = 1 << 5, /* named in Allow only: the preflight answers OPTIONS before the table */
};

/* One route: a method mask and a path pattern, who may use it, what runs it. */
struct route {
    uint8_t methods;          /* M_* */
    const char *pattern;      /* "/"-separated literal segments and captures ("{id}", "{name}") */
    uint8_t auth;             /* enum route_auth */
    bool body;                /* takes a body: it is left unread for the handler */
    size_t size;              /* the request's state: a struct that begins with struct route_req */
    route_step_fn parse;      /* the parse phase, or NULL */
    route_handler_fn handler; /* owns the request from its call on */
};

static enum conn_verdict healthz(struct conn *c, struct route_req *q);
static enum conn_verdict metrics(struct conn *c, struct route_req *q);

#define BARE sizeof(struct route_req)
#define FILES sizeof(struct files_req)
#define INTAKE sizeof(struct intake_req)
#define PROGRESS sizeof(struct progress_req)

/*
 * The routes. A capture matches one segment, any bytes but '/' and at least
 * one, taken raw (percent-encoding is the handler's business); literal
 * segments match exactly; there is no prefix match, so a trailing slash or
 * an extra segment is another path. The first route whose pattern and
 * method match is taken; HEAD is taken where GET is. ROUTE_ANON marks
 * what ALLOW_ANONYMOUS opens: uploads, reading a file by its id, and an
 * upload's progress (an anonymous upload's own).
 * M_OPTIONS on /v1/uploads only names the preflight in that path's Allow.
 */
static const struct route routes[] = {
    /* {methods, pattern, auth, body, state, parse, handler} */
    {M_GET, "/healthz", ROUTE_OPEN, false, BARE, NULL, healthz},
    {M_GET, "/metrics", ROUTE_OPEN, false, BARE, NULL, metrics},
    {M_GET, "/v1/files", ROUTE_TOKEN, false, FILES, files_parse_list, files_list},
    {M_GET, "/v1/files/{id}", ROUTE_ANON, false, FILES, files_parse_id, files_get},
    {M_DELETE, "/v1/files/{id}", ROUTE_TOKEN, false, FILES, files_parse_id, files_delete},
    {M_PUT, "/v1/files/{name}", ROUTE_ANON, true, INTAKE, intake_parse, intake_begin},
    {M_GET, "/v1/files/{id}/content", ROUTE_ANON, false, FILES, files_parse_id, files_content},
    {M_POST, "/v1/files/{id}/link", ROUTE_TOKEN, false, FILES, files_parse_id, files_link},
    {M_POST | M_OPTIONS, "/v1/uploads", ROUTE_ANON, true, INTAKE, intake_parse, intake_begin},
    {M_GET, "/v1/uploads/{id}/progress", ROUTE_ANON, false, PROGRESS, progress_parse, progress_get},
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

/* The phases, in the order a request goes through them; the handler comes last. */
enum route_phase { PHASE_PARSE, PHASE_AUTH, PHASE_LIMITS, PHASE_HANDLER };

static enum route_rc parse_phase(struct conn *c, struct route_req *q)
{
    return q->route->parse != NULL ? q->route->parse(c, q) : ROUTE_NEXT;
}

static const route_step_fn phases[PHASE_HANDLER] = {
    [PHASE_PARSE] = parse_phase,
    [PHASE_AUTH] = access_check,
    [PHASE_LIMITS] = limits_check,
};

/* What matching a request against the table found. */
enum match_result {
    MATCH_OK,        /* route_match.route is the request's route */
    MATCH_NO_PATH,   /* no route has this path: 404 */
    MATCH_NO_METHOD, /* routes have this path, none this method: 405 with allow */
};

struct route_match {
    const struct route *route;            /* MATCH_OK: the route */
    unsigned allow;                       /* MATCH_NO_METHOD: the path's methods (M_*) */
    bool bodyless;                        /* MATCH_NO_METHOD: a route of the path takes no body */
    uint8_t ncap;                         /* MATCH_OK: captures in cap[] */
    struct http_span cap[ROUTE_CAPS_MAX]; /* MATCH_OK: the captures, in the path's order */
};

/* The M_* bit that selects routes for an HTTP method; 0 for methods no route takes. */
static unsigned method_bit(int method)
{
    switch (method) {
    case HTTP_GET:
    case HTTP_HEAD:
        return M_GET;
    case HTTP_PUT:
        return M_PUT;
    case HTTP_POST:
        return M_POST;
    case HTTP_PATCH:
        return M_PATCH;
    case HTTP_DELETE:
        return M_DELETE;
    default:
        return 0;
    }
}

/* Whether path matches pattern; its captures go to cap[], their count to *ncap. */
static bool pattern_match(const char *pattern, struct http_span path,
                          struct http_span cap[ROUTE_CAPS_MAX], uint8_t *ncap)
{
    const char *pat = pattern;
    const char *p = path.p;
    const char *end = path.p + path.len;
    uint8_t n = 0;

    while (*pat != '\0') {
        const char *seg_end;
        const char *pat_end;
        size_t len;

        if (*pat != '/' || p == end || *p != '/')
            return false;
        pat++;
        p++;
        seg_end = memchr(p, '/', (size_t)(end - p));
        if (seg_end == NULL)
            seg_end = end;
        pat_end = strchrnul(pat, '/');
        len = (size_t)(seg_end - p);
        if (*pat == '{') {
            if (len == 0 || n == ROUTE_CAPS_MAX)
                return false;
            cap[n].p = p;
            cap[n].len = len;
            n++;
        } else if (len != (size_t)(pat_end - pat) || memcmp(p, pat, len) != 0) {
            return false;
        }
        pat = pat_end;
        p = seg_end;
    }
    if (p != end)
        return false;
    *ncap = n;
    return true;
}

/* Find the route of method and path in table[0..n). */
static enum match_result match(const struct route *table, size_t n, int method,
                               struct http_span path, struct route_match *m)
{
    unsigned want = method_bit(method);
    size_t i;

    memset(m, 0, sizeof(*m));
    for (i = 0; i < n; i++) {
        const struct route *r = &table[i];
        struct http_span cap[ROUTE_CAPS_MAX];
        uint8_t ncap;

        if (!pattern_match(r->pattern, path, cap, &ncap))
            continue;
        if ((r->methods & want) != 0) {
            m->route = r;
            m->ncap = ncap;
            memcpy(m->cap, cap, sizeof(cap));
            return MATCH_OK;
        }
        m->allow |= r->methods;
        m->bodyless |= !r->body;
    }
    return m->allow != 0 ? MATCH_NO_METHOD : MATCH_NO_PATH;
}

/* "Allow: ...\r\n" for a mask of M_* bits, into buf. */
static const char *allow_line(unsigned allow, char buf[ALLOW_MAX])
{
    static const struct {
        unsigned bit;
        const char *names;
    } order[] = {
        {M_GET, "GET, HEAD"}, {M_PUT, "PUT"},       {M_POST, "POST"},
        {M_PATCH, "PATCH"},   {M_DELETE, "DELETE"}, {M_OPTIONS, "OPTIONS"},
    };
    size_t len = 0;
    size_t i;

    len += (size_t)snprintf(buf, ALLOW_MAX, "Allow: ");
    for (i = 0; i < sizeof(order) / sizeof(order[0]); i++)
        if (allow & order[i].bit)
            len += (size_t)snprintf(buf + len, ALLOW_MAX - len, "%s%s",
                                    len > sizeof("Allow: ") - 1 ? ", " : "", order[i].names);
    snprintf(buf + len, ALLOW_MAX - len, "\r\n");
    return buf;
}

/* Run q's phases from q->phase on, then its handler. */
static enum conn_verdict run(struct conn *c, struct route_req *q)
{
    while (q->phase < PHASE_HANDLER) {
        enum route_rc rc = phases[q->phase](c, q);

        if (rc == ROUTE_PENDING)
            return CONN_PENDING;
        if (rc == ROUTE_ANSWERED) {
            free(q);
            return CONN_ANSWERED;
        }
        q->phase++;
    }
    return q->route->handler(c, q);
}

/* A phase that waited is done with q (rc: ROUTE_NEXT or ROUTE_ANSWERED). */
static enum conn_verdict proceed(struct conn *c, struct route_req *q, enum route_rc rc)
{
    if (rc == ROUTE_ANSWERED) {
        free(q);
        return CONN_ANSWERED;
    }
    q->phase++;
    return run(c, q);
}

/* route_continue(): the request goes on; the connection too, unless it waits again. */
static void resume(struct conn *c, struct route_req *q, enum route_rc rc)
{
    /* ANSWERED, or BODY (the route reads the body from here): the connection goes on. */
    if (proceed(c, q, rc) != CONN_PENDING)
        conn_resume(c);
}

/* A matched request: its state, then its phases. */
static enum conn_verdict start(struct conn *c, const struct route_match *m, bool close)
{
    struct route_req *q = calloc(1, m->route->size);

    if (q == NULL)
        log_oom();
    q->route = m->route;
    q->rt = router_of(c);
    q->conn = conn_ref(c);
    q->resume = resume;
    q->phase = PHASE_PARSE;
    q->auth = m->route->auth;
    q->close = close;
    q->ncap = m->ncap;
    memcpy(q->cap, m->cap, sizeof(q->cap));
    return run(c, q);
}

static enum conn_verdict healthz(struct conn *c, struct route_req *q)
{
    static const char body[] = "{\"status\":\"ok\"}";
    const struct http_head *h = conn_head(c);

    reply_respond(c, h, 200, REPLY_JSON, body, sizeof(body) - 1, h->method == HTTP_HEAD, q->close,
                  "Cache-Control: no-store\r\n");
    free(q);
    return CONN_ANSWERED;
}

static enum conn_verdict metrics(struct conn *c, struct route_req *q)
{
    const struct http_head *h = conn_head(c);
    struct prom_buf b;

    b.p = malloc(METRICS_MAX);
    if (b.p == NULL)
        log_oom();
    b.len = 0;
    b.cap = METRICS_MAX;
    b.full = false;
    met_render(&b);
    reply_respond(c, h, 200, PROM_CONTENT_TYPE, b.p, b.len, h->method == HTTP_HEAD, q->close,
                  "Cache-Control: no-store\r\n");
    free(b.p);
    free(q);
    return CONN_ANSWERED;
}

static void method_not_allowed(struct conn *c, const struct http_head *h, unsigned allow,
                               bool close)
{
    char line[ALLOW_MAX];

    reply_error(c, h, 405, "method_not_allowed", "This route does not take that method.", close,
                allow_line(allow, line));
}

static enum conn_verdict router_head(struct conn *c, const struct http_head *h,
                                     const struct http_parser *p, bool skipped)
{
    struct http_span path = http_path(h);
    bool close = !http_keep_alive(p) || conn_closing(c);
    struct route_match m;
    enum match_result found;

    if (h->method == HTTP_OPTIONS && path.len >= 4 && memcmp(path.p, "/v1/", 4) == 0) {
        /* A browser's preflight: no token, no body; reply adds the origin lines. */
        reply_preflight(c, h, close);
        return CONN_ANSWERED;
    }
    found = match(routes, NROUTES, h->method, path, &m);
    if (found == MATCH_OK && m.route->body)
        return start(c, &m, close);
    if (found == MATCH_NO_METHOD && !m.bodyless) {
        /* A path that only takes uploads: whatever body came was meant as one; don't read it. */
        method_not_allowed(c, h, m.allow, true);
        return CONN_ANSWERED;
    }
    /*
     * The rest take no body: skip a small one first; past the skip limit,
     * answer at once and close rather than read it all.
     */
    if (!skipped && http_has_body(p)) {
        if (http_chunked(p) || http_content_length(p) <= CONN_DISCARD_MAX)
            return CONN_SKIP_BODY;
        close = true;
    }
    switch (found) {
    case MATCH_OK:
        return start(c, &m, close);
    case MATCH_NO_METHOD:
        method_not_allowed(c, h, m.allow, close);
        return CONN_ANSWERED;
    case MATCH_NO_PATH:
        break;
    }
    reply_error(c, h, 404, "not_found", "No route matches this path.", close, NULL);
    return CONN_ANSWERED;
}

static void router_fail(struct conn *c, int err, const struct http_head *h)
{
    switch (err) {
    case -EMSGSIZE:
        reply_error(c, h, 431, "headers_too_large",
                    "The request line and headers exceed 16384 bytes or 100 lines.", true, NULL);
        break;
    case -ETIMEDOUT:
        reply_error(c, h, 408, "request_timeout",
                    "The request did not arrive within CONNECTION_TIMEOUT.", true, NULL);
        break;
    case -ENOTSUP:
        /* The parser refuses both alike, before the head: h is NULL, the body unread. */
        reply_error(c, h, 501, "not_implemented",
                    "CONNECT and transfer codings other than chunked are not supported.", true,
                    NULL);
        break;
    case -EBUSY:
        reply_error(c, h, 503, "overloaded", "Too many connections; retry later.", true,
                    "Retry-After: 1\r\n");
        break;
    default:
        reply_error(c, h, 400, "bad_request", "The request is not valid HTTP/1.1.", true, NULL);
        break;
    }
}

const struct conn_handler router_handler = {.head = router_head, .fail = router_fail};
