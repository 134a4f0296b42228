/*
 * route_files: the /v1 metadata routes and bearer authentication.
 *
 *   GET    /v1/files?limit=N&after=CURSOR   the caller's files, newest first
 *   GET    /v1/files/{id}                   one file's metadata
 *   DELETE /v1/files/{id}                   the row goes (204)
 *
 * Every request first resolves its token (the worker's cache, else one
 * query), then runs one query; each step answers later (CONN_PENDING) and
 * carries a struct v1_req through the query's callback, which always frees
 * it, whether the connection is still there or not. Requests with the same
 * uncached token share one lookup (see auth.h for the caps that keep a flood
 * of unknown tokens away from the database).
 *
 * Without a token, ALLOW_ANONYMOUS lets a client upload and read a file by
 * its id as user "anonymous", nothing more: listing, deleting and links
 * would hand every anonymous file to anyone.
 */
#include "engine/routes/route.h"
#include "engine/routes/router.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <liburing.h>

#include "engine/core/conn.h"
#include "engine/core/log.h"
#include "engine/core/met.h"
#include "engine/core/ring.h"
#include "engine/db/auth.h"
#include "engine/db/db.h"
#include "engine/db/token.h"
#include "engine/store/store.h"
#include "proto/ids.h"

#define ID_LEN IDS_UUID_LEN
#define LIST_DEFAULT 50 /* files per page without ?limit */
#define LIST_MAX 1000   /* largest ?limit */
#define BEARER "Bearer "

/* Token lookups in flight never take more than a quarter of a pool's wait queue (auth.h). */
_Static_assert(AUTH_FLIGHTS <= DB_WAIT_MAX / 4, "token lookups would crowd the database queue");

enum v1_route { V1_LIST, V1_GET, V1_DELETE, V1_PUT, V1_CONTENT, V1_LINK };

/* One /v1 request in flight between queries; owned by whichever query carries it. */
struct v1_req {
    struct auth_wait wait; /* linked while it waits for a token lookup */
    struct router *rt;
    uint64_t conn; /* conn_ref() of the requester */
    enum v1_route route;
    bool close;                    /* the response closes the connection */
    uint8_t hash[TOK_HASH_LEN];    /* the bearer token's hash */
    char user[AUTH_USER_MAX + 1];  /* resolved owner */
    char id[ID_LEN + 1];           /* {id} */
    unsigned limit;                /* ?limit */
    char after_ts[IDS_TS_LEN + 1]; /* ?after, decoded: created_at ... */
    char after_id[ID_LEN + 1];     /* ... and id; "" without a cursor */
    char name[IDS_NAME_MAX + 1];   /* PUT: the sanitized file name */
    uint64_t expected;             /* PUT: Content-Length, 0 if chunked */
};

static void run(struct conn *c, struct v1_req *q);

static bool span_eq(struct http_span s, const char *lit)
{
    size_t n = strlen(lit);

    return s.len == n && memcmp(s.p, lit, n) == 0;
}

/* The list's ?limit and ?after; false when either is malformed. */
static bool parse_list(const struct http_head *h, struct v1_req *q)
{
    struct http_span v;
    q->limit = LIST_DEFAULT;
    if (http_query_param(h, "limit", &v)) {
        unsigned long lim = 0;
        size_t i;
        if (v.len == 0 || v.len > 4)
            return false;
        for (i = 0; i < v.len; i++) {
            if (v.p[i] < '0' || v.p[i] > '9')
                return false;
            lim = lim * 10 + (unsigned long)(v.p[i] - '0');
        }
        if (lim < 1 || lim > LIST_MAX)
            return false;
        q->limit = (unsigned)lim;
    }
    if (!http_query_param(h, "after", &v))
        return true;
    return ids_cursor_decode(v.p, v.len, q->after_ts, q->after_id) == 0;
}

/* Answer a request that waited, then let its connection go on. */
static void answer_json(struct conn *c, int status, cJSON *doc, bool close)
{
    char *body = doc != NULL ? cJSON_PrintUnformatted(doc) : NULL;

    if (doc != NULL && body == NULL)
        log_oom();
    route_respond(c, conn_head(c), status, body != NULL ? ROUTE_JSON : NULL, body,
                  body != NULL ? strlen(body) : 0, conn_head(c)->method == HTTP_HEAD, close, NULL);
    free(body);
}

static void unavailable(struct conn *c, int err, bool close)
{
    if (err == -ETIMEDOUT)
        route_error(c, conn_head(c), 503, "database_timeout",
                    "The database did not answer within DB_QUERY_TIMEOUT; retry later.", close,
                    "Retry-After: 1\r\n");
    else if (err == -EAGAIN)
        route_error(c, conn_head(c), 503, "overloaded",
                    "Too many requests are waiting for the database; retry later.", close,
                    "Retry-After: 1\r\n");
    else if (err == -EINVAL)
        route_error(c, conn_head(c), 500, "internal_error", "The database refused the query.",
                    close, NULL);
    else
        route_error(c, conn_head(c), 503, "database_unavailable",
                    "The database cannot be reached; retry later.", close, "Retry-After: 1\r\n");
}

/* The connection a callback answers, or NULL (then q is freed here). */
static struct conn *requester(struct v1_req *q)
{
    struct conn *c = conn_deref(q->rt->conns, q->conn);

    if (c == NULL)
        free(q);
    return c;
}

/* Finish a request that waited: answer already queued, free q, resume. */
static void done(struct conn *c, struct v1_req *q)
{
    free(q);
    conn_resume(c);
}

static void add_nullable(cJSON *o, const char *key, PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        cJSON_AddNullToObject(o, key);
    else
        cJSON_AddStringToObject(o, key, PQgetvalue(res, row, col));
}

/* One row of FILE_COLS (see db.c) as API.md's metadata object. */
static cJSON *file_json(PGresult *res, int row)
{
    cJSON *o = cJSON_CreateObject();

    if (o == NULL)
        log_oom();
    cJSON_AddStringToObject(o, "id", PQgetvalue(res, row, 0));
    cJSON_AddStringToObject(o, "name", PQgetvalue(res, row, 1));
    cJSON_AddNumberToObject(o, "size", strtod(PQgetvalue(res, row, 2), NULL));
    add_nullable(o, "mime", res, row, 3);
    add_nullable(o, "sha256", res, row, 4);
    cJSON_AddStringToObject(o, "status", PQgetvalue(res, row, 5));
    add_nullable(o, "created_at", res, row, 6);
    add_nullable(o, "processed_at", res, row, 7);
    add_nullable(o, "error", res, row, 8);
    return o;
}

static void on_get(void *ud, uint64_t tag, PGresult *res, int err)
{
    struct v1_req *q = ud;
    struct conn *c = requester(q);
    cJSON *doc;

    (void)tag;
    if (c == NULL)
        return;
    if (err != 0) {
        unavailable(c, err, q->close);
    } else if (PQntuples(res) == 0) {
        route_error(c, conn_head(c), 404, "not_found", "No such file.", q->close, NULL);
    } else {
        doc = file_json(res, 0);
        answer_json(c, 200, doc, q->close);
        cJSON_Delete(doc);
    }
    done(c, q);
}

static void on_list(void *ud, uint64_t tag, PGresult *res, int err)
{
    struct v1_req *q = ud;
    struct conn *c = requester(q);
    cJSON *doc;
    cJSON *files;
    int rows;
    int i;

    (void)tag;
    if (c == NULL)
        return;
    if (err != 0) {
        unavailable(c, err, q->close);
        done(c, q);
        return;
    }
    /* One row more than asked says whether a next page exists. */
    rows = PQntuples(res);
    doc = cJSON_CreateObject();
    files = cJSON_AddArrayToObject(doc, "files");
    if (doc == NULL || files == NULL)
        log_oom();
    for (i = 0; i < rows && (unsigned)i < q->limit; i++)
        cJSON_AddItemToArray(files, file_json(res, i));
    if ((unsigned)rows > q->limit) {
        char cur[IDS_CURSOR_MAX];
        int last = (int)q->limit - 1;
        if (ids_cursor_encode(cur, PQgetvalue(res, last, 6), PQgetvalue(res, last, 0)) < 0)
            cJSON_AddNullToObject(doc, "next"); /* not a row this schema writes */
        else
            cJSON_AddStringToObject(doc, "next", cur);
    } else {
        cJSON_AddNullToObject(doc, "next");
    }
    answer_json(c, 200, doc, q->close);
    cJSON_Delete(doc);
    done(c, q);
}

static void on_content(void *ud, uint64_t tag, PGresult *res, int err)
{
    struct v1_req *q = ud;
    struct conn *c = requester(q);
    const char *status;

    (void)tag;
    if (c == NULL)
        return;
    if (err != 0) {
        unavailable(c, err, q->close);
        done(c, q);
        return;
    }
    status = PQntuples(res) > 0 ? PQgetvalue(res, 0, 5) : NULL;
    /* Bytes exist once the upload completed; a rejected file's are not served. */
    if (status == NULL || strcmp(status, "uploading") == 0 || strcmp(status, "rejected") == 0) {
        route_error(c, conn_head(c), 404, "not_found", "No such file.", q->close, NULL);
        done(c, q);
        return;
    }
    if (route_download_begin(
            c, PQgetvalue(res, 0, 0), strtoull(PQgetvalue(res, 0, 1), NULL, 10),
            PQgetvalue(res, 0, 2), PQgetisnull(res, 0, 3) ? NULL : PQgetvalue(res, 0, 3),
            PQgetisnull(res, 0, 4) ? NULL : PQgetvalue(res, 0, 4), q->close) == CONN_ANSWERED) {
        done(c, q);
        return;
    }
    /* The download resumes the connection when it has sent everything. */
    free(q);
}

/* The stored bytes of a deleted row, being unlinked. */
struct unlink_op {
    bool close;
    char key[STORE_KEY_MAX];
};

static void on_unlinked(struct conn *c, int res)
{
    struct unlink_op *u = conn_rdata(c);
    bool close = u->close;

    if (res < 0 && res != -ENOENT)
        log_warn("deleted file's bytes not removed", "key=%s error=%s", u->key, strerror(-res));
    conn_set_rdata(c, NULL, NULL);
    free(u);
    answer_json(c, 204, NULL, close);
    conn_resume(c);
}

static void on_delete(void *ud, uint64_t tag, PGresult *res, int err)
{
    struct v1_req *q = ud;
    struct conn *c = conn_deref(q->rt->conns, tag);
    struct unlink_op *u;
    struct io_uring_sqe *sqe;

    if (c == NULL) {
        /* The row is gone: its bytes must go too, even with nobody to tell. */
        if (err == 0 && PQntuples(res) > 0)
            unlinkat(store_dirfd(), PQgetvalue(res, 0, 0), 0);
        free(q);
        return;
    }
    if (err != 0 || PQntuples(res) == 0) {
        if (err != 0)
            unavailable(c, err, q->close);
        else
            route_error(c, conn_head(c), 404, "not_found", "No such file.", q->close, NULL);
        done(c, q);
        return;
    }
    /* The row went first: a file without a row is invisible, a row without bytes is not. */
    u = malloc(sizeof(*u));
    if (u == NULL)
        log_oom();
    u->close = q->close;
    snprintf(u->key, sizeof(u->key), "%s", PQgetvalue(res, 0, 0));
    free(q);
    conn_set_rdata(c, u, free);
    sqe = conn_op_sqe(c, on_unlinked);
    io_uring_prep_unlinkat(sqe, store_dirfd(), u->key, 0);
}

/* Reads go to the replica when there is one. */
static struct db_pool *read_pool(struct router *r)
{
    return r->ndb > 1 ? &r->db[1] : &r->db[0];
}

/* Issue the route's query; on refusal answer now. Returns the verdict. */
static enum conn_verdict submit(struct conn *c, struct v1_req *q, struct db_pool *pool,
                                enum db_stmt stmt, const char *const *vals, const int *lens,
                                unsigned n, db_cb cb)
{
    int ret = db_query(pool, stmt, vals, lens, n, 0, true, cb, q, q->conn);

    if (ret == 0)
        return CONN_PENDING;
    if (ret == -EAGAIN)
        met_inc(&q->rt->ring->met.db_rejected);
    unavailable(c, ret, q->close);
    free(q);
    return CONN_ANSWERED;
}

/* The caller is known: run the route's query. */
static enum conn_verdict run_route(struct conn *c, struct v1_req *q)
{
    char limit[8];
    const char *vals[4];
    int lens[4];

    switch (q->route) {
    case V1_GET:
    case V1_DELETE:
    case V1_CONTENT:
        vals[0] = q->id;
        lens[0] = ID_LEN;
        vals[1] = q->user;
        lens[1] = (int)strlen(q->user);
        if (q->route == V1_CONTENT)
            return submit(c, q, read_pool(q->rt), DB_FILE_CONTENT, vals, lens, 2, on_content);
        if (q->route == V1_GET)
            return submit(c, q, read_pool(q->rt), DB_FILE_GET, vals, lens, 2, on_get);
        return submit(c, q, &q->rt->db[0], DB_FILE_DELETE, vals, lens, 2, on_delete);
    case V1_PUT: {
        enum conn_verdict v = route_upload_begin(c, q->user, q->name, q->expected, q->close);
        free(q);
        return v;
    }
    case V1_LINK:
        /* Signed links are not served yet: what a caller with a token gets is no route. */
        route_error(c, conn_head(c), 404, "not_found", "No route matches this path.", q->close,
                    NULL);
        free(q);
        return CONN_ANSWERED;
    case V1_LIST:
        vals[0] = q->user;
        lens[0] = (int)strlen(q->user);
        lens[1] = snprintf(limit, sizeof(limit), "%u", q->limit + 1);
        vals[1] = limit;
        if (q->after_id[0] == '\0')
            return submit(c, q, read_pool(q->rt), DB_FILE_LIST, vals, lens, 2, on_list);
        vals[2] = q->after_ts;
        lens[2] = (int)strlen(q->after_ts);
        vals[3] = q->after_id;
        lens[3] = ID_LEN;
        return submit(c, q, read_pool(q->rt), DB_FILE_LIST_AFTER, vals, lens, 4, on_list);
    }
    free(q);
    return CONN_ANSWERED;
}

static void unauthorized(struct conn *c, const struct http_head *h, bool close)
{
    route_error(c, h, 401, "unauthorized", "A valid bearer token is required.", close,
                "WWW-Authenticate: Bearer\r\n");
}

/*
 * A bad token (malformed or unknown): 401. Past AUTH_STRIKES_MAX on one
 * connection the 401 closes it: a client that keeps presenting tokens is
 * guessing, and must pay a new connection for each further few guesses.
 */
static void refuse_token(struct conn *c, const struct http_head *h, struct v1_req *q)
{
    bool close = q->close;

    if (auth_strike(q->rt->auth, q->conn) >= AUTH_STRIKES_MAX && !close) {
        met_inc(&q->rt->ring->met.auth_strikeouts);
        close = true;
    }
    unauthorized(c, h, close);
}

static struct v1_req *req_of(struct auth_wait *w)
{
    return (struct v1_req *)((char *)w - offsetof(struct v1_req, wait));
}

/* A token lookup answered: its answer goes to every request that waited for it. */
static void on_token(void *ud, uint64_t tag, PGresult *res, int err)
{
    struct auth_wait *w = auth_flight_end(ud);
    struct v1_req *first = req_of(w);
    struct router *r = first->rt;
    const char *user = NULL;

    (void)tag;
    if (err == 0 && PQntuples(res) > 0)
        user = PQgetvalue(res, 0, 0);
    if (err == 0)
        auth_cache_put(r->auth, first->hash, user, r->ring->now_ms);
    while (w != NULL) {
        struct v1_req *q = req_of(w);
        struct conn *c;

        w = w->next;
        c = requester(q);
        if (c == NULL)
            continue;
        if (err != 0) {
            unavailable(c, err, q->close);
            done(c, q);
        } else if (user == NULL) {
            refuse_token(c, conn_head(c), q);
            done(c, q);
        } else {
            snprintf(q->user, sizeof(q->user), "%s", user);
            run(c, q);
        }
    }
}

/* Continue after the token lookup answered: the route runs, or answers at once. */
static void run(struct conn *c, struct v1_req *q)
{
    /* ANSWERED, or BODY (the route reads the body from here): the connection goes on. */
    if (run_route(c, q) != CONN_PENDING)
        conn_resume(c);
    /* CONN_PENDING: the route's callback resumes the connection. */
}

/*
 * Ask the database who owns q's token, or wait for the lookup of the same
 * token already in flight. known: the token was valid lately (a renewal,
 * outside the cap on unknown tokens). Past the cap the request is refused
 * with 503 at once: queueing it would hand the database's wait queue to
 * whoever sends the most unknown tokens.
 */
static enum conn_verdict lookup(struct conn *c, const struct http_head *h, struct v1_req *q,
                                bool known)
{
    struct router *r = q->rt;
    struct auth_flight *f;
    const char *vals[1];
    int lens[1];
    bool started;
    int ret;

    f = auth_flight_join(r->auth, q->hash, known, &q->wait, &started);
    if (f == NULL) {
        met_inc(&r->ring->met.auth_refused);
        route_error(c, h, 503, "overloaded", "Too many token lookups are in flight; retry later.",
                    q->close, "Retry-After: 1\r\n");
        free(q);
        return CONN_ANSWERED;
    }
    if (!started) {
        met_inc(&r->ring->met.auth_coalesced);
        return CONN_PENDING;
    }
    met_inc(&r->ring->met.auth_lookups);
    vals[0] = (const char *)q->hash;
    lens[0] = TOK_HASH_LEN;
    ret = db_query(&r->db[0], DB_TOKEN_LOOKUP, vals, lens, 1, 1, true, on_token, f, q->conn);
    if (ret == 0)
        return CONN_PENDING;
    /* Nobody joined meanwhile (same loop turn): q is the flight's only waiter. */
    auth_flight_end(f);
    if (ret == -EAGAIN)
        met_inc(&r->ring->met.db_rejected);
    unavailable(c, ret, q->close);
    free(q);
    return CONN_ANSWERED;
}

/* What ALLOW_ANONYMOUS opens (API.md): uploads, and reading a file by its id. */
static bool anonymous_may(enum v1_route route)
{
    return route == V1_PUT || route == V1_GET || route == V1_CONTENT;
}

/* Resolve the caller from the cache, else ask the database. */
static enum conn_verdict authenticate(struct conn *c, const struct http_head *h, struct v1_req *q)
{
    struct router *r = q->rt;
    struct http_span auth;
    const char *user;

    if (!http_header(h, "authorization", &auth)) {
        if (r->cfg->allow_anonymous && anonymous_may(q->route)) {
            snprintf(q->user, sizeof(q->user), "anonymous");
            return run_route(c, q);
        }
        unauthorized(c, h, q->close);
        free(q);
        return CONN_ANSWERED;
    }
    if (auth.len <= sizeof(BEARER) - 1 || strncasecmp(auth.p, BEARER, sizeof(BEARER) - 1) != 0 ||
        !tok_wellformed(auth.p + sizeof(BEARER) - 1, auth.len - (sizeof(BEARER) - 1))) {
        refuse_token(c, h, q);
        free(q);
        return CONN_ANSWERED;
    }
    tok_hash(auth.p + sizeof(BEARER) - 1, auth.len - (sizeof(BEARER) - 1), q->hash);
    switch (auth_cache_get(r->auth, q->hash, r->ring->now_ms, &user)) {
    case AUTH_VALID:
        met_inc(&r->ring->met.auth_cache_hits);
        snprintf(q->user, sizeof(q->user), "%s", user);
        return run_route(c, q);
    case AUTH_INVALID:
        met_inc(&r->ring->met.auth_cache_hits);
        refuse_token(c, h, q);
        free(q);
        return CONN_ANSWERED;
    case AUTH_EXPIRED:
        met_inc(&r->ring->met.auth_cache_misses);
        return lookup(c, h, q, true);
    case AUTH_MISS:
        break;
    }
    met_inc(&r->ring->met.auth_cache_misses);
    return lookup(c, h, q, false);
}

/*
 * PUT /v1/files/{name}: the door checks (length present, not over
 * MAX_FILE_SIZE: 413 before a byte of the body is read), then auth, then
 * route_upload_begin().
 */
/* The file name of a raw POST: X-Filename, else Content-Disposition's filename, else "file". */
static struct http_span post_name(const struct http_head *h)
{
    struct http_span v;
    struct http_span none = {"file", 4};
    const char *f;
    const char *end;

    if (http_header(h, "x-filename", &v) && v.len > 0)
        return v;
    if (!http_header(h, "content-disposition", &v))
        return none;
    f = memmem(v.p, v.len, "filename=", 9);
    if (f == NULL)
        return none;
    f += 9;
    end = v.p + v.len;
    if (f < end && *f == '"') {
        const char *q = memchr(f + 1, '"', (size_t)(end - f - 1));
        v.p = f + 1;
        v.len = q != NULL ? (size_t)(q - f - 1) : (size_t)(end - f - 1);
    } else {
        const char *semi = memchr(f, ';', (size_t)(end - f));
        v.p = f;
        v.len = semi != NULL ? (size_t)(semi - f) : (size_t)(end - f);
    }
    return v.len > 0 ? v : none;
}

static enum conn_verdict put_head(struct conn *c, const struct http_head *h,
                                  const struct http_parser *p, struct http_span path, bool close)
{
    struct router *r = router_of(c);
    struct http_span cl;
    struct http_span ct;
    struct v1_req *q;
    uint64_t limit = r->cfg->max_file_size;
    bool post = h->method == HTTP_POST;
    int named;

    if (!http_chunked(p) && !http_header(h, "content-length", &cl)) {
        route_error(c, h, 411, "length_required",
                    "An upload needs Content-Length or Transfer-Encoding: chunked.", true, NULL);
        return CONN_ANSWERED;
    }
    /* A form carries up to MAX_FILES_PER_REQUEST files, each checked as it grows. */
    if (post && http_header(h, "content-type", &ct) && ct.len >= 10 &&
        strncasecmp(ct.p, "multipart/", 10) == 0)
        limit = limit * r->cfg->max_files_per_request + (1u << 20);
    if (http_content_length(p) > limit) {
        route_error(c, h, 413, "too_large", "The file is larger than MAX_FILE_SIZE.", true, NULL);
        return CONN_ANSWERED;
    }
    q = calloc(1, sizeof(*q));
    if (q == NULL)
        log_oom();
    q->rt = r;
    q->conn = conn_ref(c);
    q->route = V1_PUT;
    q->close = close;
    q->expected = http_content_length(p);
    if (post) {
        struct http_span n = post_name(h);
        named = ids_filename(n.p, n.len, q->name);
    } else {
        named = ids_filename(path.p + 10, path.len - 10, q->name);
    }
    if (named < 0) {
        /* The row would be refused after the whole body, as a 503 the client retries forever. */
        route_error(c, h, 400, "bad_request", "The file name is not valid UTF-8.", true, NULL);
        free(q);
        return CONN_ANSWERED;
    }
    return authenticate(c, h, q);
}

enum conn_verdict route_v1(struct conn *c, const struct http_head *h, const struct http_parser *p,
                           bool skipped, bool close)
{
    struct http_span path = http_path(h);
    struct v1_req *q;
    enum v1_route route;
    const char *allow;
    const char *id = NULL;
    if (h->method == HTTP_OPTIONS) {
        /* A browser's preflight: no token, no body; with_cors() adds the origin lines. */
        route_respond(c, h, 204, NULL, NULL, 0, false, close,
                      "Access-Control-Allow-Methods: GET, HEAD, PUT, POST, PATCH, DELETE, "
                      "OPTIONS\r\n"
                      "Access-Control-Allow-Headers: Authorization, Content-Type, "
                      "Content-Disposition, X-Filename, X-Progress-Id, X-Priority, Upload-Offset, "
                      "Upload-Length, Upload-Metadata, Upload-Checksum, Upload-Concat, "
                      "Upload-Defer-Length, Tus-Resumable\r\n"
                      "Access-Control-Max-Age: 600\r\n");
        return CONN_ANSWERED;
    }
    if (span_eq(path, "/v1/uploads")) {
        if (h->method == HTTP_POST)
            return put_head(c, h, p, path, close);
        route_error(c, h, 405, "method_not_allowed", "This route does not take that method.", true,
                    "Allow: POST, OPTIONS\r\n");
        return CONN_ANSWERED;
    }
    if (path.len > 10 && memcmp(path.p, "/v1/files/", 10) == 0 && h->method == HTTP_PUT &&
        memchr(path.p + 10, '/', path.len - 10) == NULL)
        return put_head(c, h, p, path, close);
    /* The other routes take no body: skip a small one; past the limit answer and close. */
    if (!skipped && http_has_body(p)) {
        if (http_chunked(p) || http_content_length(p) <= CONN_DISCARD_MAX)
            return CONN_SKIP_BODY;
        close = true;
    }
    if (path.len == 10 + ID_LEN + 8 && memcmp(path.p, "/v1/files/", 10) == 0 &&
        memcmp(path.p + 10 + ID_LEN, "/content", 8) == 0) {
        id = path.p + 10;
        route = V1_CONTENT;
        allow = "Allow: GET, HEAD\r\n";
        if (h->method != HTTP_GET && h->method != HTTP_HEAD)
            goto out_method;
    } else if (h->method == HTTP_POST && path.len == 10 + ID_LEN + 5 &&
               memcmp(path.p, "/v1/files/", 10) == 0 &&
               memcmp(path.p + 10 + ID_LEN, "/link", 5) == 0) {
        /* Never anonymous: a link would serve the file to whoever holds the URL. */
        id = path.p + 10;
        route = V1_LINK;
    } else if (span_eq(path, "/v1/files")) {
        route = V1_LIST;
        allow = "Allow: GET, HEAD\r\n";
        if (h->method != HTTP_GET && h->method != HTTP_HEAD)
            goto out_method;
    } else if (path.len > 10 && memcmp(path.p, "/v1/files/", 10) == 0 &&
               memchr(path.p + 10, '/', path.len - 10) == NULL) {
        id = path.p + 10;
        allow = "Allow: GET, HEAD, PUT, DELETE\r\n";
        if (h->method == HTTP_GET || h->method == HTTP_HEAD)
            route = V1_GET;
        else if (h->method == HTTP_DELETE)
            route = V1_DELETE;
        else
            goto out_method;
    } else {
        route_error(c, h, 404, "not_found", "No route matches this path.", close, NULL);
        return CONN_ANSWERED;
    }

    q = calloc(1, sizeof(*q));
    if (q == NULL)
        log_oom();
    q->rt = router_of(c);
    q->conn = conn_ref(c);
    q->route = route;
    q->close = close;
    if (id != NULL) {
        size_t n = route == V1_CONTENT || route == V1_LINK ? ID_LEN : path.len - 10;
        if (!ids_uuid_ok(id, n)) {
            /* Not an id this server hands out: no such file (after auth, below). */
            memset(q->id, 0, sizeof(q->id));
        } else {
            memcpy(q->id, id, ID_LEN);
        }
    } else if (!parse_list(h, q)) {
        route_error(c, h, 400, "bad_request",
                    "limit must be 1..1000 and after a cursor from a previous page.", close, NULL);
        free(q);
        return CONN_ANSWERED;
    }
    if (id != NULL && q->id[0] == '\0') {
        /* Authenticate anyway, so a bad id and a missing token answer the same way. */
        memcpy(q->id, "00000000-0000-0000-0000-000000000000", ID_LEN);
    }
    return authenticate(c, h, q);

out_method:
    route_error(c, h, 405, "method_not_allowed", "This route does not take that method.", close,
                allow);
    return CONN_ANSWERED;
}
