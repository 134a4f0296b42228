/*
 * files: the /v1/files routes; see files.h.
 *
 * Each handler runs one query and answers from its callback, which carries
 * the struct files_req and always frees it, whether the connection is still
 * there or not. Reads go to the replica when there is one.
 *
 * GET /v1/files/{id} reads through the metadata cache in Redis (mcache.h)
 * when Redis is up: a hit answers the bytes the database path answered when
 * it stored them, with no query; a miss queries and stores. DELETE leaves a
 * tombstone there once its row is gone. Both say so in the event stream
 * (events.h): DELETE emits file.deleted.
 */
#include "engine/routes/files.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <liburing.h>

#include "engine/core/conn.h"
#include "engine/core/log.h"
#include "engine/core/met.h"
#include "engine/core/ring.h"
#include "engine/db/db.h"
#include "engine/db/events.h"
#include "engine/db/mcache.h"
#include "engine/routes/download.h"
#include "engine/routes/reply.h"
#include "engine/store/store.h"

#define ID_LEN IDS_UUID_LEN
#define NIL_ID "00000000-0000-0000-0000-000000000000"
#define LIST_DEFAULT 50 /* files per page without ?limit */
#define LIST_MAX 1000   /* largest ?limit */

/* The router frees a request it did not hand over as the struct route_req it begins with. */
_Static_assert(offsetof(struct files_req, rq) == 0, "struct route_req must come first");

static struct files_req *files_req_of(struct route_req *q)
{
    return (struct files_req *)q;
}

/* The list's ?limit and ?after; false when either is malformed. */
static bool parse_list(const struct http_head *h, struct files_req *f)
{
    struct http_span v;
    f->limit = LIST_DEFAULT;
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
        f->limit = (unsigned)lim;
    }
    if (!http_query_param(h, "after", &v))
        return true;
    return ids_cursor_decode(v.p, v.len, f->after_ts, f->after_id) == 0;
}

enum route_rc files_parse_list(struct conn *c, struct route_req *q)
{
    if (parse_list(conn_head(c), files_req_of(q)))
        return ROUTE_NEXT;
    reply_error(c, conn_head(c), 400, "bad_request",
                "limit must be 1..1000 and after a cursor from a previous page.", q->close, NULL);
    return ROUTE_ANSWERED;
}

enum route_rc files_parse_id(struct conn *c, struct route_req *q)
{
    struct files_req *f = files_req_of(q);
    struct http_span id = q->cap[0];

    (void)c;
    /*
     * Not an id this server hands out: no such file, but only after auth, so
     * that a bad id and a missing token answer the same way.
     */
    memcpy(f->id, ids_uuid_ok(id.p, id.len) ? id.p : NIL_ID, ID_LEN);
    f->id[ID_LEN] = '\0';
    return ROUTE_NEXT;
}

/* Answer a request that waited, then let its connection go on. */
static void answer_json(struct conn *c, int status, cJSON *doc, bool close)
{
    char *body = doc != NULL ? cJSON_PrintUnformatted(doc) : NULL;

    if (doc != NULL && body == NULL)
        log_oom();
    reply_respond(c, conn_head(c), status, body != NULL ? REPLY_JSON : NULL, body,
                  body != NULL ? strlen(body) : 0, conn_head(c)->method == HTTP_HEAD, close, NULL);
    free(body);
}

static void not_found(struct conn *c, bool close)
{
    reply_error(c, conn_head(c), 404, "not_found", "No such file.", close, NULL);
}

/* The connection a callback answers, or NULL (then f is freed here). */
static struct conn *requester(struct files_req *f)
{
    struct conn *c = conn_deref(f->rq.rt->conns, f->rq.conn);

    if (c == NULL)
        free(f);
    return c;
}

/* Finish a request that waited: answer already queued, free f, resume. */
static void done(struct conn *c, struct files_req *f)
{
    free(f);
    conn_resume(c);
}

static void add_nullable(cJSON *o, const char *key, const char *val)
{
    if (val == NULL)
        cJSON_AddNullToObject(o, key);
    else
        cJSON_AddStringToObject(o, key, val);
}

/* One file's metadata as API.md's object. */
static cJSON *file_json(const struct db_file_meta *m)
{
    cJSON *o = cJSON_CreateObject();

    if (o == NULL)
        log_oom();
    cJSON_AddStringToObject(o, "id", m->id);
    cJSON_AddStringToObject(o, "name", m->name);
    cJSON_AddNumberToObject(o, "size", (double)m->size);
    add_nullable(o, "mime", m->mime);
    add_nullable(o, "sha256", m->sha256);
    cJSON_AddStringToObject(o, "status", m->status);
    add_nullable(o, "created_at", m->created_at);
    add_nullable(o, "processed_at", m->processed_at);
    add_nullable(o, "error", m->error);
    return o;
}

static struct db_pool *read_pool(struct router *r);
static enum conn_verdict by_id(struct conn *c, struct route_req *q, struct db_pool *pool,
                               enum db_stmt stmt, db_cb cb);

/* Answer one file's metadata: the body both the database and the cache path send. */
static void answer_meta(struct conn *c, const char *body, size_t len, bool close)
{
    reply_respond(c, conn_head(c), 200, REPLY_JSON, body, len, conn_head(c)->method == HTTP_HEAD,
                  close, NULL);
}

static void on_get(void *ud, uint64_t tag, struct pg_result *res, int err)
{
    struct files_req *f = ud;
    struct conn *c = requester(f);
    struct router *rt;
    struct db_file_meta m;
    cJSON *doc;
    char *body;

    (void)tag;
    if (c == NULL)
        return;
    rt = f->rq.rt;
    if (err != 0) {
        reply_db_error(c, err, f->rq.close);
    } else if (db_rows(res) == 0) {
        not_found(c, f->rq.close);
    } else {
        db_file_meta_get(res, 0, &m);
        doc = file_json(&m);
        body = cJSON_PrintUnformatted(doc);
        cJSON_Delete(doc);
        if (body == NULL)
            log_oom();
        answer_meta(c, body, strlen(body), f->rq.close);
        /* NX: a delete's tombstone, written since this row was read, wins. */
        mcache_store(rt->redis, &rt->ring->met, f->id, f->rq.user, body, strlen(body));
        free(body);
    }
    done(c, f);
}

/*
 * The cache's answer: a hit answers here (a tombstone or another owner's
 * entry: 404, as the database would); anything else (a miss, a value not
 * ours, an error, a lost answer) goes to the database.
 */
static void on_cached(void *ud, uint64_t tag, struct redisReply *reply, int err)
{
    struct files_req *f = ud;
    struct conn *c = requester(f);
    struct met_worker *met;
    struct mcache_val v;
    const char *val;
    size_t len = 0;
    int kind = -ENOENT;

    (void)tag;
    if (c == NULL)
        return;
    met = &f->rq.rt->ring->met;
    val = err == 0 && !redis_reply_is_error(reply) ? redis_reply_str(reply, &len) : NULL;
    if (val != NULL)
        kind = mcache_decode(val, len, &v);
    if (kind == MCACHE_TOMB || (kind == MCACHE_ENTRY && !mcache_owned_by(&v, f->rq.user))) {
        met_inc(&met->mcache_hits);
        not_found(c, f->rq.close);
        done(c, f);
        return;
    }
    if (kind == MCACHE_ENTRY) {
        met_inc(&met->mcache_hits);
        answer_meta(c, v.body, v.body_len, f->rq.close);
        done(c, f);
        return;
    }
    met_inc(&met->mcache_misses);
    if (by_id(c, &f->rq, read_pool(f->rq.rt), DB_FILE_GET, on_get) == CONN_ANSWERED)
        conn_resume(c); /* answered at once, f freed */
}

static void on_list(void *ud, uint64_t tag, struct pg_result *res, int err)
{
    struct files_req *f = ud;
    struct conn *c = requester(f);
    struct db_file_meta m;
    cJSON *doc;
    cJSON *files;
    int rows;
    int i;

    (void)tag;
    if (c == NULL)
        return;
    if (err != 0) {
        reply_db_error(c, err, f->rq.close);
        done(c, f);
        return;
    }
    /* One row more than asked says whether a next page exists. */
    rows = db_rows(res);
    doc = cJSON_CreateObject();
    files = cJSON_AddArrayToObject(doc, "files");
    if (doc == NULL || files == NULL)
        log_oom();
    for (i = 0; i < rows && (unsigned)i < f->limit; i++) {
        db_file_meta_get(res, i, &m);
        cJSON_AddItemToArray(files, file_json(&m));
    }
    if ((unsigned)rows > f->limit) {
        char cur[IDS_CURSOR_MAX];
        db_file_meta_get(res, (int)f->limit - 1, &m);
        if (m.created_at == NULL || ids_cursor_encode(cur, m.created_at, m.id) < 0)
            cJSON_AddNullToObject(doc, "next"); /* not a row this schema writes */
        else
            cJSON_AddStringToObject(doc, "next", cur);
    } else {
        cJSON_AddNullToObject(doc, "next");
    }
    answer_json(c, 200, doc, f->rq.close);
    cJSON_Delete(doc);
    done(c, f);
}

static void on_content(void *ud, uint64_t tag, struct pg_result *res, int err)
{
    struct files_req *f = ud;
    struct conn *c = requester(f);
    struct db_file_content row;

    (void)tag;
    if (c == NULL)
        return;
    if (err != 0) {
        reply_db_error(c, err, f->rq.close);
        done(c, f);
        return;
    }
    if (db_rows(res) == 0) {
        not_found(c, f->rq.close);
        done(c, f);
        return;
    }
    db_file_content_get(res, 0, &row);
    /* Bytes exist once the upload completed; a rejected file's are not served. */
    if (strcmp(row.status, "uploading") == 0 || strcmp(row.status, "rejected") == 0) {
        not_found(c, f->rq.close);
        done(c, f);
        return;
    }
    if (download_begin(c, row.storage_key, row.size, row.name, row.mime, row.sha256, f->rq.close) ==
        CONN_ANSWERED) {
        done(c, f);
        return;
    }
    /* The download resumes the connection when it has sent everything. */
    free(f);
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

/*
 * The row of f is gone: its cache entry becomes a tombstone, and file.deleted
 * goes out. Whether or not the requester is still there.
 */
static void deleted(struct files_req *f, const struct pg_result *res)
{
    struct router *rt = f->rq.rt;
    struct db_file_deleted d;
    struct events_file ev;

    db_file_deleted_get(res, 0, &d);
    mcache_invalidate(rt->redis, &rt->ring->met, f->id);
    ev = (struct events_file){f->id, f->rq.user, d.size, d.sha256, d.mime};
    if (rt->events != NULL)
        events_emit(rt->events, EVENTS_FILE_DELETED, &ev);
}

static void on_delete(void *ud, uint64_t tag, struct pg_result *res, int err)
{
    struct files_req *f = ud;
    struct conn *c = conn_deref(f->rq.rt->conns, tag);
    struct unlink_op *u;
    struct io_uring_sqe *sqe;

    if (err == 0 && db_rows(res) > 0)
        deleted(f, res);
    if (c == NULL) {
        /* The row is gone: its bytes must go too, even with nobody to tell. */
        if (err == 0 && db_rows(res) > 0)
            unlinkat(store_dirfd(), db_file_deleted_key(res, 0), 0);
        free(f);
        return;
    }
    if (err != 0 || db_rows(res) == 0) {
        if (err != 0)
            reply_db_error(c, err, f->rq.close);
        else
            not_found(c, f->rq.close);
        done(c, f);
        return;
    }
    /* The row went first: a file without a row is invisible, a row without bytes is not. */
    u = malloc(sizeof(*u));
    if (u == NULL)
        log_oom();
    u->close = f->rq.close;
    snprintf(u->key, sizeof(u->key), "%s", db_file_deleted_key(res, 0));
    free(f);
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
static enum conn_verdict submit(struct conn *c, struct files_req *f, struct db_pool *pool,
                                enum db_stmt stmt, const char *const *vals, const int *lens,
                                unsigned n, db_cb cb)
{
    int ret = db_query(pool, stmt, vals, lens, n, 0, true, cb, f, f->rq.conn);

    if (ret == 0)
        return CONN_PENDING;
    if (ret == -EAGAIN)
        met_inc(&f->rq.rt->ring->met.db_rejected);
    reply_db_error(c, ret, f->rq.close);
    free(f);
    return CONN_ANSWERED;
}

/* A query of the file {id} of the caller: $1 id, $2 owner. */
static enum conn_verdict by_id(struct conn *c, struct route_req *q, struct db_pool *pool,
                               enum db_stmt stmt, db_cb cb)
{
    struct files_req *f = files_req_of(q);
    const char *vals[2] = {f->id, q->user};
    int lens[2] = {ID_LEN, (int)strlen(q->user)};

    return submit(c, f, pool, stmt, vals, lens, 2, cb);
}

enum conn_verdict files_get(struct conn *c, struct route_req *q)
{
    /* Redis down or refusing: straight to the database, no waiting. */
    if (mcache_lookup(q->rt->redis, files_req_of(q)->id, on_cached, q, q->conn) == 0)
        return CONN_PENDING;
    return by_id(c, q, read_pool(q->rt), DB_FILE_GET, on_get);
}

enum conn_verdict files_content(struct conn *c, struct route_req *q)
{
    return by_id(c, q, read_pool(q->rt), DB_FILE_CONTENT, on_content);
}

enum conn_verdict files_delete(struct conn *c, struct route_req *q)
{
    return by_id(c, q, &q->rt->db[0], DB_FILE_DELETE, on_delete);
}

enum conn_verdict files_link(struct conn *c, struct route_req *q)
{
    /* Signed links are not served yet: what a caller with a token gets is no route. */
    reply_error(c, conn_head(c), 404, "not_found", "No route matches this path.", q->close, NULL);
    free(q);
    return CONN_ANSWERED;
}

enum conn_verdict files_list(struct conn *c, struct route_req *q)
{
    struct files_req *f = files_req_of(q);
    char limit[8];
    const char *vals[4];
    int lens[4];

    vals[0] = q->user;
    lens[0] = (int)strlen(q->user);
    lens[1] = snprintf(limit, sizeof(limit), "%u", f->limit + 1);
    vals[1] = limit;
    if (f->after_id[0] == '\0')
        return submit(c, f, read_pool(q->rt), DB_FILE_LIST, vals, lens, 2, on_list);
    vals[2] = f->after_ts;
    lens[2] = (int)strlen(f->after_ts);
    vals[3] = f->after_id;
    lens[3] = ID_LEN;
    return submit(c, f, read_pool(q->rt), DB_FILE_LIST_AFTER, vals, lens, 4, on_list);
}
