/*
 * progress: upload progress records in Redis and their route; see progress.h.
 */
#include "engine/routes/progress.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "engine/core/conn.h"
#include "engine/core/log.h"
#include "engine/core/met.h"
#include "engine/core/ring.h"
#include "engine/core/tmr.h"
#include "engine/db/redis.h"
#include "engine/routes/reply.h"

#define KEY_PREFIX "ringup:progress:"
#define RECORD_MAX 128 /* an "uploading" record: two integers and a state */

_Static_assert(offsetof(struct progress_req, rq) == 0, "struct route_req must come first");

/* A worker's uploads in flight with a progress id, and the timer that keeps them fresh. */
struct progress {
    struct ring *ring;        /* the clock, timers, metrics */
    struct redis_pool *redis; /* where records go */
    struct progress_up *list; /* tracked uploads, newest first */
    struct tmr tick;          /* armed while the list is not empty */
};

bool progress_id_ok(const char *p, size_t len)
{
    size_t i;

    if (len == 0 || len > PROGRESS_ID_MAX)
        return false;
    for (i = 0; i < len; i++) {
        char ch = p[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

size_t progress_key(char *out, const char *user, const char *id, size_t id_len)
{
    int n = snprintf(out, PROGRESS_KEY_MAX, KEY_PREFIX "%s:%.*s", user, (int)id_len, id);

    /* A user name is at most AUTH_USER_MAX bytes and an id PROGRESS_ID_MAX: it fits. */
    return n < (int)PROGRESS_KEY_MAX ? (size_t)n : PROGRESS_KEY_MAX - 1;
}

int progress_header(const struct http_head *h, struct http_span *id)
{
    if (!http_header(h, "x-progress-id", id)) {
        id->p = NULL;
        id->len = 0;
        return 0;
    }
    return progress_id_ok(id->p, id->len) ? 0 : -EINVAL;
}

/* ---- writing records ---- */

/* SET key record PX PROGRESS_KEEP_MS, fire-and-forget; skipped (counted) while Redis is down. */
static void put(struct progress *pg, const char *key, const char *rec, size_t len)
{
    char ttl[16];
    const char *argv[5] = {"SET", key, rec, "PX", ttl};
    size_t lens[5] = {3, strlen(key), len, 2, 0};

    lens[4] = (size_t)snprintf(ttl, sizeof(ttl), "%u", PROGRESS_KEEP_MS);
    if (pg->redis != NULL && redis_up(pg->redis) &&
        redis_cmdv(pg->redis, NULL, NULL, 0, 5, argv, lens) == 0)
        met_inc(&pg->ring->met.progress_writes);
    else
        met_inc(&pg->ring->met.progress_skipped);
}

/* The "uploading" record of u, now. */
static void write_uploading(struct progress_up *u)
{
    char rec[RECORD_MAX];
    char exp[24] = "null";
    int n;

    if (u->has_expected)
        snprintf(exp, sizeof(exp), "%llu", (unsigned long long)u->expected);
    n = snprintf(rec, sizeof(rec), "{\"received\":%llu,\"expected\":%s,\"state\":\"uploading\"}",
                 (unsigned long long)u->received, exp);
    u->written = u->received;
    u->last_ms = u->pg->ring->now_ms;
    put(u->pg, u->key, rec, (size_t)n);
}

static void on_tick(struct tmr *t)
{
    struct progress *pg = (struct progress *)((char *)t - offsetof(struct progress, tick));
    uint64_t now = pg->ring->now_ms;
    struct progress_up *u;

    /* Bytes that arrived since the last write, or a record near its expiry, go out now. */
    for (u = pg->list; u != NULL; u = u->next) {
        if ((u->received != u->written && now - u->last_ms >= PROGRESS_EVERY_MS) ||
            now - u->last_ms >= PROGRESS_REFRESH_MS)
            write_uploading(u);
    }
    if (pg->list != NULL)
        tmr_set(&pg->ring->timers, &pg->tick, now + PROGRESS_EVERY_MS);
}

struct progress *progress_new(struct ring *r, struct redis_pool *p)
{
    struct progress *pg = calloc(1, sizeof(*pg));

    if (pg == NULL)
        log_oom();
    pg->ring = r;
    pg->redis = p;
    tmr_init(&pg->tick, on_tick);
    return pg;
}

void progress_free(struct progress *pg)
{
    if (pg == NULL)
        return;
    tmr_cancel(&pg->ring->timers, &pg->tick);
    free(pg);
}

void progress_begin(struct progress_up *u, struct progress *pg, const char *owner,
                    const struct http_head *h, uint64_t expected, bool has_expected)
{
    struct http_span id;

    if (pg == NULL || progress_header(h, &id) < 0 || id.len == 0)
        return;
    u->pg = pg;
    u->expected = expected;
    u->has_expected = has_expected;
    progress_key(u->key, owner, id.p, id.len);
    u->prev = NULL;
    u->next = pg->list;
    if (pg->list != NULL)
        pg->list->prev = u;
    pg->list = u;
    if (!tmr_armed(&pg->tick))
        tmr_set(&pg->ring->timers, &pg->tick, pg->ring->now_ms + PROGRESS_EVERY_MS);
    write_uploading(u);
}

void progress_add(struct progress_up *u, uint64_t n)
{
    u->received += n;
    /* The turn's clock, read once per loop turn: no clock call per receive. */
    if (u->pg != NULL && u->pg->ring->now_ms - u->last_ms >= PROGRESS_EVERY_MS)
        write_uploading(u);
}

/* Stop tracking u; the tick stops with the last one. */
static void untrack(struct progress_up *u)
{
    struct progress *pg = u->pg;

    if (u->prev != NULL)
        u->prev->next = u->next;
    else
        pg->list = u->next;
    if (u->next != NULL)
        u->next->prev = u->prev;
    u->prev = u->next = NULL;
    if (pg->list == NULL)
        tmr_cancel(&pg->ring->timers, &pg->tick);
    u->pg = NULL;
}

/* The final record of u, in state, with what the state adds (files or code), then untrack it. */
static void write_final(struct progress_up *u, const char *state, const char *const *ids,
                        uint32_t n, const char *code)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *files;
    char *text;
    uint32_t i;

    if (o == NULL)
        log_oom();
    cJSON_AddNumberToObject(o, "received", (double)u->received);
    if (u->has_expected)
        cJSON_AddNumberToObject(o, "expected", (double)u->expected);
    else
        cJSON_AddNullToObject(o, "expected");
    cJSON_AddStringToObject(o, "state", state);
    if (code != NULL) {
        cJSON_AddStringToObject(o, "code", code);
    } else {
        files = cJSON_AddArrayToObject(o, "files");
        if (files == NULL)
            log_oom();
        for (i = 0; i < n; i++)
            cJSON_AddItemToArray(files, cJSON_CreateString(ids[i]));
    }
    text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (text == NULL)
        log_oom();
    put(u->pg, u->key, text, strlen(text));
    free(text);
    untrack(u);
}

void progress_done(struct progress_up *u, const char *const *ids, uint32_t n)
{
    if (u->pg != NULL)
        write_final(u, "done", ids, n, NULL);
}

void progress_fail(struct progress_up *u, const char *code)
{
    if (u->pg != NULL)
        write_final(u, "error", NULL, 0, code);
}

/* ---- the route ---- */

enum route_rc progress_parse(struct conn *c, struct route_req *q)
{
    struct progress_req *pr = (struct progress_req *)q;
    struct http_span id = q->cap[0];

    (void)c;
    /* Not an id a client may send: no record has it, which auth decides first (404 or 401). */
    if (progress_id_ok(id.p, id.len)) {
        memcpy(pr->id, id.p, id.len);
        pr->id[id.len] = '\0';
    } else {
        pr->id[0] = '\0';
    }
    return ROUTE_NEXT;
}

static void not_found(struct conn *c, bool close)
{
    reply_error(c, conn_head(c), 404, "not_found",
                "No upload in flight or lately ended has this id.", close, NULL);
}

static void unavailable(struct conn *c, bool close)
{
    reply_error(c, conn_head(c), 503, "overloaded", "Upload progress is unavailable; retry later.",
                close, "Retry-After: 1\r\n");
}

/* Redis's answer: the record (200, as stored), none (404) or a failure (503). */
static void on_record(void *ud, uint64_t tag, struct redisReply *reply, int err)
{
    struct progress_req *pr = ud;
    struct conn *c = conn_deref(pr->rq.rt->conns, tag);
    const char *rec;
    size_t len = 0;

    if (c == NULL) {
        free(pr);
        return;
    }
    /* A lost or refused answer says nothing of the record: retry later, as with Redis down. */
    if (err != 0 || redis_reply_is_error(reply))
        unavailable(c, pr->rq.close);
    else if ((rec = redis_reply_str(reply, &len)) == NULL)
        not_found(c, pr->rq.close); /* nil: never written, expired, or another user's */
    else
        reply_respond(c, conn_head(c), 200, REPLY_JSON, rec, len, conn_head(c)->method == HTTP_HEAD,
                      pr->rq.close, NULL);
    free(pr);
    conn_resume(c);
}

enum conn_verdict progress_get(struct conn *c, struct route_req *q)
{
    struct progress_req *pr = (struct progress_req *)q;
    struct redis_pool *p = q->rt->redis;
    char key[PROGRESS_KEY_MAX];
    const char *argv[2] = {"GET", key};
    size_t lens[2] = {3, 0};

    if (pr->id[0] == '\0') {
        not_found(c, q->close);
        free(pr);
        return CONN_ANSWERED;
    }
    lens[1] = progress_key(key, q->user, pr->id, strlen(pr->id));
    if (p == NULL || !redis_up(p) || redis_cmdv(p, on_record, pr, q->conn, 2, argv, lens) < 0) {
        unavailable(c, q->close);
        free(pr);
        return CONN_ANSWERED;
    }
    return CONN_PENDING;
}
