"""Integration tests of what Redis carries: upload progress, the metadata cache, events.

Two ringup processes share one PostgreSQL database, one storage directory and
one private Redis (rediskit.RedisServer, on a unix socket in a temporary
directory), so that what one instance writes the other reads, and a test may
stop Redis and start it again. Progress of a slow PUT is read from the second
instance while the first receives it; a cache hit is shown to make no
database query (the db query counter of /metrics stays still, and moves by
one per request when the cache is bypassed); events are read back with a
consumer group and a subscriber; with Redis stopped, uploads and deletes go
on and their events are flushed, in order, once it is back; a stopping server
waits for Redis to take its last events.

run.py hands its @test decorator to register(); nothing runs at import.
Only the Python standard library is used; all traffic goes to 127.0.0.1.
"""

import json
import re
import socket
import threading
import time

import db_routes
import harness
import rediskit
import uploads
from harness import Conn, Fail, expect, expect_eq, expect_error, expect_status, http, short

_TESTS = harness.Tests()
register = _TESTS.register  # run.py hands its @test decorator to this
_test = _TESTS.test

AT_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Redis reconnects within a tenth of a second, for as long as the test runs.
REDIS_ENV = {"REDIS_RETRY_ATTEMPTS": "1000", "REDIS_RETRY_DELAY": "100"}


class Pair:
    """Two servers on one database, one storage directory and one Redis; users a and b."""

    def __init__(self, ctx, db, redis, workers=1):
        self.ctx, self.db, self.redis = ctx, db, redis
        self.storage = harness.tmpdir()
        self.user_a = "na%d" % int(time.monotonic() * 1000 % 1000000)
        self.user_b = self.user_a + "b"
        self.tok_a = db.token(self.user_a)
        self.tok_b = db.token(self.user_b)
        env = dict(REDIS_ENV, REDIS_URL=redis.url())
        self.s1 = db_routes.db_server(ctx, db, "--storage-dir", self.storage,
                                      *uploads.NO_LIMITS, workers=workers, env=env)
        self.s2 = db_routes.db_server(ctx, db, "--storage-dir", self.storage,
                                      *uploads.NO_LIMITS, workers=workers, env=env)
        wait_for(lambda: metric(self.s1.port, "ringup_meta_cache_hits_total") is not None,
                 "the first server's /metrics")


def metric(port, name):
    return db_routes.scrape(port).value(name)


def wait_for(cond, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Fail("timed out waiting for %s" % what)
        time.sleep(0.05)


def get(port, path, token):
    return db_routes.api(port, "GET", path, token=token)


def progress(port, pid, token):
    return get(port, "/v1/uploads/%s/progress" % pid, token)


def progress_doc(port, pid, token, what):
    r = progress(port, pid, token)
    try:
        expect_status(r, 200)
        doc = r.json()
    except Fail as e:
        raise Fail("%s: %s" % (what, e.summary), *e.details)
    expect(isinstance(doc, dict) and type(doc.get("received")) is int and "state" in doc,
           "%s: progress body must hold integer received and a state" % what,
           '{"received":N,"expected":M,"state":...}', short(r.body))
    return doc


def wait_state(port, pid, token, state, what, timeout=10.0):
    last = [None]

    def check():
        r = progress(port, pid, token)
        last[0] = r
        return r.status == 200 and r.json().get("state") == state and r.json()

    try:
        return wait_for(check, "%s: state %s" % (what, state), timeout)
    except Fail as e:
        raise Fail(e.summary, "last answer: %s" % (last[0].describe() if last[0] else None))


def put_slowly(port, token, name, body, pid, pieces, pause, watch):
    """A PUT whose body goes out in pieces, pause seconds apart; watch() runs between
    pieces. Returns the response."""
    c = Conn(port, timeout=10.0)
    try:
        c.send(uploads.put_head(name, token, len(body), headers=(("X-Progress-Id", pid),)))
        step = (len(body) + pieces - 1) // pieces
        for i in range(0, len(body), step):
            c.send(body[i:i + step])
            time.sleep(pause)
            watch()
        return c.read_response(what="PUT /v1/files/%s" % name, timeout=10.0)
    finally:
        c.close()


def db_queries(port):
    """Queries the database slices of the server at port answered or failed, less the
    token lookups (a worker's first request of a token looks it up)."""
    m = db_routes.scrape(port)
    return (m.value("ringup_db_queries_total") or 0) - (m.value("ringup_auth_lookups_total") or 0)


def xread_all(redis, group, consumer):
    """Every entry the group has not seen: [(entry id, event dict)]."""
    out = []
    while True:
        r = redis.cli("XREADGROUP", "GROUP", group, consumer, "COUNT", 100, "STREAMS",
                      "ringup:events", ">")
        if not r:
            return out
        for eid, fields in r[0][1]:
            expect(len(fields) == 2 and fields[0] == b"event",
                   "a stream entry holds one field, event", "[event, JSON]", repr(fields))
            out.append((eid, json.loads(fields[1])))
            redis.cli("XACK", "ringup:events", group, eid)


def check_event(ev, typ, fid, owner, size, what):
    expect(sorted(ev) == ["at", "id", "mime", "owner", "sha256", "size", "type"],
           "%s: event fields" % what, "type id owner size sha256 mime at", repr(ev))
    expect_eq("%s: type" % what, typ, ev["type"])
    expect_eq("%s: id" % what, fid, ev["id"])
    expect_eq("%s: owner" % what, owner, ev["owner"])
    expect(type(ev["size"]) is int and ev["size"] == size, "%s: size" % what, size,
           repr(ev["size"]))
    expect(ev["sha256"] is None and ev["mime"] is None,
           "%s: sha256 and mime are null until processed" % what, "null, null",
           "%r, %r" % (ev["sha256"], ev["mime"]))
    expect(isinstance(ev["at"], str) and AT_RE.match(ev["at"]),
           "%s: at is RFC 3339 UTC" % what, "YYYY-MM-DDTHH:MM:SS.ffffffZ", repr(ev["at"]))


def put_ok(port, token, name, body, headers=()):
    r = uploads.put(port, name, body, token, headers=headers)
    expect_status(r, 201)
    return r.json()["id"]


def delete(port, fid, token):
    r = db_routes.api(port, "DELETE", "/v1/files/" + fid, token=token)
    expect_status(r, 204)


# ==========================================================================
# progress


@_test("notify: progress of a slow PUT seen from the other instance, then done; other user 404")
def t_progress_put(ctx):
    with db_routes.TestDb(ctx) as db, rediskit.RedisServer() as redis:
        p = Pair(ctx, db, redis)
        body = bytes(range(256)) * 800  # 200 KiB: the spliced path
        pid = "slow-put.1"
        seen = []

        def watch():
            r = progress(p.s2.port, pid, p.tok_a)
            if r.status == 200:
                seen.append(r.json())

        resp = put_slowly(p.s1.port, p.tok_a, "slow.bin", body, pid, 10, 0.15, watch)
        expect_status(resp, 201)
        fid = resp.json()["id"]
        flying = [d for d in seen if d.get("state") == "uploading"]
        expect(len(flying) >= 2, "the second instance saw the upload in flight at least twice",
               ">= 2 uploading records", repr(seen))
        for d in flying:
            expect_eq("expected of an uploading record", len(body), d.get("expected"))
            expect(sorted(d) == ["expected", "received", "state"],
                   "an uploading record holds received, expected, state", "3 fields", repr(d))
        received = [d["received"] for d in flying]
        expect(received == sorted(received) and received[-1] > received[0],
               "received grows while the body arrives", "increasing", repr(received))
        expect(received[-1] < len(body), "in flight, received is below the body's size",
               "< %d" % len(body), repr(received))
        done = wait_state(p.s2.port, pid, p.tok_a, "done", "after the 201")
        expect_eq("done record", {"received": len(body), "expected": len(body),
                                  "state": "done", "files": [fid]}, done)
        ttl = redis.cli("PTTL", "ringup:progress:%s:%s" % (p.user_a, pid))
        expect(isinstance(ttl, int) and 0 < ttl <= 60000, "a done record expires within 60 s",
               "0 < PTTL <= 60000", repr(ttl))
        expect_error(progress(p.s2.port, pid, p.tok_b), 404, "not_found")
        expect_error(progress(p.s1.port, "no-such-id", p.tok_a), 404, "not_found")
        expect_error(progress(p.s1.port, "bad:id", p.tok_a), 404, "not_found")


@_test("notify: progress of a multipart POST (done with both ids), of a chunked PUT "
       "(expected null), a malformed X-Progress-Id is 400")
def t_progress_post(ctx):
    with db_routes.TestDb(ctx) as db, rediskit.RedisServer() as redis:
        p = Pair(ctx, db, redis)
        body, b = uploads.form([("f1", "a.txt", b"alpha" * 100, "text/plain"),
                                ("f2", "b.txt", b"beta" * 100, "text/plain")])
        r = uploads.post(p.s1.port, body, p.tok_a,
                         headers=(("Content-Type", "multipart/form-data; boundary=%s" % b),
                                  ("X-Progress-Id", "form_7")))
        expect_status(r, 201)
        ids = [f["id"] for f in r.json()["files"]]
        done = wait_state(p.s2.port, "form_7", p.tok_a, "done", "multipart POST")
        expect_eq("multipart done record", {"received": len(body), "expected": len(body),
                                            "state": "done", "files": ids}, done)
        r = uploads.put(p.s1.port, "c.bin", b"x" * 5000, p.tok_a, chunk_sizes=[1000] * 5,
                        headers=(("X-Progress-Id", "chunky"),))
        expect_status(r, 201)
        done = wait_state(p.s2.port, "chunky", p.tok_a, "done", "chunked PUT")
        expect(done["expected"] is None and done["received"] > 0,
               "a chunked body's expected is null", "expected null", repr(done))
        for bad in ("a b", "x" * 65, "caf\u00e9", "a/b"):
            r = uploads.put(p.s1.port, "d.bin", b"d", p.tok_a,
                            headers=(("X-Progress-Id", bad),))
            expect_error(r, 400, "bad_request")


@_test("notify: an upload that fails midway ends in state error (client gone, too large)")
def t_progress_error(ctx):
    with db_routes.TestDb(ctx) as db, rediskit.RedisServer() as redis:
        p = Pair(ctx, db, redis)
        c = Conn(p.s1.port)
        c.send(uploads.put_head("cut.bin", p.tok_a, 100000,
                                headers=(("X-Progress-Id", "cut-1"),)))
        c.send(b"y" * 30000)
        wait_for(lambda: progress(p.s2.port, "cut-1", p.tok_a).status == 200
                 and progress(p.s2.port, "cut-1", p.tok_a).json()["received"] > 0,
                 "the cut upload's record")
        c.close()
        err = wait_state(p.s2.port, "cut-1", p.tok_a, "error", "client gone")
        expect_eq("error record of a client gone", "client_gone", err.get("code"))
        expect_eq("expected of the cut upload", 100000, err.get("expected"))
        # A chunked body passes MAX_FILE_SIZE midway: 413, and the record says why.
        small = db_routes.db_server(ctx, db, "--storage-dir", p.storage, *uploads.NO_LIMITS,
                                    workers=1, env=dict(REDIS_ENV, REDIS_URL=redis.url(),
                                                        MAX_FILE_SIZE="2000"))
        r = uploads.put(small.port, "big.bin", b"z" * 3000, p.tok_a, chunk_sizes=[1000] * 3,
                        headers=(("X-Progress-Id", "big-1"),))
        expect_error(r, 413, "too_large")
        err = wait_state(p.s2.port, "big-1", p.tok_a, "error", "too large")
        expect_eq("error record of a body past MAX_FILE_SIZE", "too_large", err.get("code"))
        expect(err["received"] > 2000 and err["expected"] is None,
               "the record counts the bytes received; a chunked body has no expected size",
               "received > 2000, expected null", repr(err))


@_test("notify: progress route answers 503 while Redis is down; uploads go on")
def t_progress_redis_down(ctx):
    with db_routes.TestDb(ctx) as db, rediskit.RedisServer() as redis:
        p = Pair(ctx, db, redis)
        redis.stop()
        wait_for(lambda: progress(p.s1.port, "x", p.tok_a).status == 503,
                 "503 from the progress route")
        r = progress(p.s1.port, "x", p.tok_a)
        expect_error(r, 503, "overloaded")
        expect_eq("Retry-After of the 503", "1", r.hget("Retry-After"))
        fid = put_ok(p.s1.port, p.tok_a, "nored.bin", b"n" * 100,
                     headers=(("X-Progress-Id", "nored"),))
        expect(UUID_RE.match(fid), "upload without Redis", "201 with an id", fid)
        expect((metric(p.s1.port, "ringup_progress_skipped_total") or 0) >= 1,
               "progress writes skipped while Redis is down are counted", ">= 1", None)


# ==========================================================================
# the metadata cache


@_test("notify: GET /v1/files/{id} from the cache makes no query, same bytes; owner checked; "
       "DELETE leaves a tombstone: 404 from both instances")
def t_cache(ctx):
    with db_routes.TestDb(ctx) as db, rediskit.RedisServer() as redis:
        p = Pair(ctx, db, redis)
        fid = put_ok(p.s1.port, p.tok_a, "cached.txt", b"cache me")
        path = "/v1/files/" + fid
        first = get(p.s2.port, path, p.tok_a)  # a miss: the database answers and stores
        expect_status(first, 200)
        val = wait_for(lambda: redis.cli("GET", "ringup:meta:" + fid), "the cache entry")
        expect(val.startswith(b"M" + p.user_a.encode() + b"\0"),
               "the cache entry carries its owner", "M<owner>\\0<json>", short(val))
        for port in (p.s2.port, p.s1.port):
            get(port, path, p.tok_a)  # warms the worker's token cache
            q0, h0 = db_queries(port), metric(port, "ringup_meta_cache_hits_total")
            bodies = [get(port, path, p.tok_a) for _ in range(3)]
            q1, h1 = db_queries(port), metric(port, "ringup_meta_cache_hits_total")
            for r in bodies:
                expect_status(r, 200)
                expect(r.body == first.body, "a cache hit answers the database's bytes",
                       short(first.body), short(r.body))
            expect_eq("database queries during 3 cached GETs", 0, q1 - q0)
            expect_eq("cache hits counted for 3 cached GETs", 3, h1 - h0)
        # The entry is user a's: user b gets 404 from it, as from the database.
        expect_error(get(p.s2.port, path, p.tok_b), 404, "not_found")
        # With the entry gone, each GET is a query again: the counter above can move.
        redis.cli("DEL", "ringup:meta:" + fid)
        q0 = db_queries(p.s2.port)
        expect_status(get(p.s2.port, path, p.tok_a), 200)
        expect_eq("database queries of a GET after the entry went", 1, db_queries(p.s2.port) - q0)
        delete(p.s1.port, fid, p.tok_a)
        expect_eq("the entry after DELETE", b"T", redis.cli("GET", "ringup:meta:" + fid))
        for port in (p.s1.port, p.s2.port):
            q0 = db_queries(port)
            expect_error(get(port, path, p.tok_a), 404, "not_found")
            expect_eq("database queries of a GET on a tombstone", 0, db_queries(port) - q0)
        expect((metric(p.s1.port, "ringup_meta_cache_invalidations_total") or 0) >= 1,
               "the invalidation is counted", ">= 1", None)


# ==========================================================================
# events


class Subscriber(threading.Thread):
    """SUBSCRIBE ringup:events on the test's Redis; the messages' payloads in .got."""

    def __init__(self, redis):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10.0)
        self.sock.connect(redis.sock)
        self.sock.sendall(rediskit._encode(["SUBSCRIBE", "ringup:events"]))
        self.reader = rediskit._Reader(self.sock)
        self.reader.reply()  # the subscribe confirmation
        self.got = []
        self.start()

    def run(self):
        try:
            while True:
                msg = self.reader.reply()
                if isinstance(msg, list) and msg[0] == b"message":
                    self.got.append(json.loads(msg[2]))
        except (OSError, ConnectionError, ValueError):
            pass

    def close(self):
        self.sock.close()


@_test("notify: file.queued and file.deleted reach the stream (consumer group) in order, "
       "and the channel")
def t_events(ctx):
    with db_routes.TestDb(ctx) as db, rediskit.RedisServer() as redis:
        p = Pair(ctx, db, redis)
        expect_eq("XGROUP CREATE", "OK",
                  redis.cli("XGROUP", "CREATE", "ringup:events", "g", "$", "MKSTREAM"))
        sub = Subscriber(redis)
        try:
            f1 = put_ok(p.s1.port, p.tok_a, "e1.bin", b"1" * 11)
            f2 = put_ok(p.s2.port, p.tok_b, "e2.bin", b"2" * 22)
            delete(p.s1.port, f1, p.tok_a)
            want = [("file.queued", f1, p.user_a, 11), ("file.queued", f2, p.user_b, 22),
                    ("file.deleted", f1, p.user_a, 11)]
            got = []
            wait_for(lambda: got.extend(xread_all(redis, "g", "c1")) or len(got) >= 3,
                     "3 events in the stream")
            expect_eq("events in the stream", 3, len(got))
            for (typ, fid, owner, size), (_, ev) in zip(want, got):
                check_event(ev, typ, fid, owner, size, "stream %s %s" % (typ, fid[:8]))
            wait_for(lambda: len(sub.got) >= 3, "3 events on the channel")
            expect_eq("the channel's events are the stream's", [e for _, e in got], sub.got)
        finally:
            sub.close()
        expect_eq("ringup_events_sent_total of the first server", 2,
                  metric(p.s1.port, "ringup_events_sent_total"))


@_test("notify: Redis down, uploads and deletes go on; back up, the backlog is flushed in order "
       "and its gauge returns to 0")
def t_events_backlog(ctx):
    with db_routes.TestDb(ctx) as db, rediskit.RedisServer() as redis:
        p = Pair(ctx, db, redis)
        redis.stop()
        want = []
        for i in range(4):
            fid = put_ok(p.s1.port, p.tok_a, "b%d.bin" % i, b"b" * (10 + i))
            want.append(("file.queued", fid, 10 + i))
        delete(p.s1.port, want[1][1], p.tok_a)
        want.append(("file.deleted", want[1][1], 11))
        fid = put_ok(p.s1.port, p.tok_a, "b9.bin", b"b" * 19)
        want.append(("file.queued", fid, 19))
        r = get(p.s1.port, "/v1/files/" + fid, p.tok_a)
        expect_status(r, 200)  # the database answers without the cache
        expect_eq("ringup_events_backlog while Redis is down", len(want),
                  metric(p.s1.port, "ringup_events_backlog"))
        redis.start()
        wait_for(lambda: metric(p.s1.port, "ringup_events_backlog") == 0,
                 "the backlog gauge back to 0")
        entries = redis.cli("XRANGE", "ringup:events", "-", "+")
        evs = [json.loads(fields[1]) for _, fields in entries]
        expect_eq("events in the stream after the flush", len(want), len(evs),
                  "got: %s" % short(repr([(e["type"], e["id"][:8]) for e in evs]), 600))
        for (typ, fid, size), ev in zip(want, evs):
            check_event(ev, typ, fid, p.user_a, size, "flushed %s %s" % (typ, fid[:8]))
        expect_eq("ringup_events_dropped_total", 0, metric(p.s1.port, "ringup_events_dropped_total"))


@_test("notify: a stopping server waits for Redis to take its events (CLIENT PAUSE holds them)")
def t_events_flush_at_stop(ctx):
    with db_routes.TestDb(ctx) as db, rediskit.RedisServer() as redis:
        p = Pair(ctx, db, redis)
        # Redis holds every write for 1.5 s: the event's script waits in Redis, unanswered.
        expect_eq("CLIENT PAUSE", "OK", redis.cli("CLIENT", "PAUSE", 1500, "WRITE"))
        fid = put_ok(p.s1.port, p.tok_a, "last.bin", b"l" * 7)
        expect_eq("ringup_events_backlog with the script held", 1,
                  metric(p.s1.port, "ringup_events_backlog"))
        p.s1.terminate()
        rc = p.s1.wait_exit(15.0)
        p.s1.finish()
        expect_eq("exit status after SIGTERM", 0, rc)
        # A server that closed its Redis connections at once would have lost the event:
        # Redis drops a paused client's pending command when the client goes.
        evs = [json.loads(f[1]) for _, f in redis.cli("XRANGE", "ringup:events", "-", "+")]
        expect([e["id"] for e in evs if e["type"] == "file.queued"][:1] == [fid],
               "the event made just before the stop is in the stream", fid,
               repr([(e["type"], e["id"]) for e in evs]))
