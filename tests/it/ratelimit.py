"""Integration tests of the upload rate limits (UPLOAD_RATE_LIMIT, GLOBAL_RATE_LIMIT).

Every test runs two ringup processes (2 workers each) on one database (db_routes.TestDb)
and one private Redis (rediskit.RedisServer), so the counts must agree across processes
through Redis. Limits are small (a lease block of 1: every decision is made in Redis), and
the expected counts exact: a limit of 10 admits 10 uploads, never 9 or 11. Each test runs
well within one permit's refill time, so no refill blurs the counts.

run.py hands its @test decorator to register(); nothing runs at import.
Only the Python standard library is used; all traffic goes to 127.0.0.1.
"""

import os
import threading
import time

import db_routes
import harness
from harness import Conn, Fail, expect, expect_eq, expect_error, request
from rediskit import RedisServer
from uploads import form, post

_TESTS = harness.Tests()
_SEQ = [0]

register = _TESTS.register  # run.py hands its @test decorator to this
_test = _TESTS.test


def objects(storage):
    out = []
    for root, _, files in os.walk(os.path.join(storage, "objects")):
        out += [os.path.join(root, f) for f in files]
    return out


class Pair:
    """Two servers sharing a database, a storage directory and a private Redis."""

    def __init__(self, ctx, db, redis, user_limit, global_limit, extra_env=None):
        self.ctx, self.db, self.redis = ctx, db, redis
        self.storage = os.path.join(harness.tmpdir(), "store")
        os.mkdir(self.storage)
        self.servers = []
        for i in range(2):
            env = {"REDIS_URL": redis.url(), "UPLOAD_RATE_LIMIT": str(user_limit),
                   "GLOBAL_RATE_LIMIT": str(global_limit), "REDIS_RETRY_DELAY": "200",
                   "INSTANCE_ID": "rl-%d-%d-%d" % (os.getpid(), id(self), i)}
            env.update(extra_env or {})
            self.servers.append(db_routes.db_server(ctx, db, "--storage-dir", self.storage,
                                                    env=env))
        for s in self.servers:
            wait_metric(s.port, "ringup_ratelimit_mode", 1, "limits shared through Redis")

    def user(self):
        _SEQ[0] += 1
        name = "rl%d_%d_%s" % (os.getpid(), _SEQ[0], os.urandom(2).hex())
        return name, self.db.token(name)

    def put(self, i, token, name="f.bin", body=b"x" * 100):
        return http_put(self.servers[i % 2].port, name, body, token)

    def rows(self, owner):
        return int(self.db.sql("select count(*) from files where owner = %s"
                               % db_routes.q(owner))[0][0])


def http_put(port, name, body, token, headers=()):
    c = Conn(port, timeout=10.0)
    try:
        hs = [("Authorization", "Bearer " + token), ("Content-Length", str(len(body)))]
        c.send(request("PUT", "/v1/files/" + name, hs + list(headers)) + body)
        return c.read_response(what="PUT /v1/files/" + name, timeout=10.0)
    finally:
        c.close()


def metrics(port):
    return db_routes.scrape(port)


def wait_metric(port, name, want, what, timeout=10.0, **labels):
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = metrics(port).value(name, **labels)
        if got == want:
            return
        time.sleep(0.05)
    raise Fail("%s: %s never became %s" % (what, name, want), "last value: %r" % got)


def expect_limited(resp, limit, what, remaining=0):
    """A 429 as API.md has it: the error JSON, an honest Retry-After, the RateLimit-* lines."""
    expect_error(resp, 429, "rate_limited")
    for h in ("Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
        v = resp.hget(h)
        expect(v is not None and v.isdigit(), "%s: %s must be whole seconds" % (what, h),
               "digits", repr(v))
    expect(int(resp.hget("Retry-After")) >= 1, "%s: Retry-After of a refusal" % what, ">= 1",
           resp.hget("Retry-After"))
    expect_eq("%s: RateLimit-Limit" % what, str(limit), resp.hget("RateLimit-Limit"))
    expect_eq("%s: RateLimit-Remaining" % what, str(remaining), resp.hget("RateLimit-Remaining"))


def all_at_once(fns):
    """Run each fn on its own thread, released together; their results in order."""
    out = [None] * len(fns)
    gate = threading.Barrier(len(fns))

    def run(i):
        gate.wait(10)
        try:
            out[i] = fns[i]()
        except Exception as e:  # reported below, with the others' results
            out[i] = e
    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    for r in out:
        if isinstance(r, Exception):
            raise r
    return out


@_test("ratelimit: per-user limit 10 exact across two processes (16 at once: 10 x 201, "
       "6 x 429 with Retry-After and RateLimit-*); another user is unaffected")
def t_user_exact(ctx):
    with db_routes.TestDb(ctx) as db, RedisServer() as redis:
        p = Pair(ctx, db, redis, 10, 1000)
        alice, tok = p.user()
        res = all_at_once([lambda i=i: p.put(i, tok, "a%d.bin" % i) for i in range(16)])
        codes = sorted(r.status for r in res)
        expect_eq("statuses of 16 uploads at a limit of 10", [201] * 10 + [429] * 6, codes)
        for r in res:
            if r.status == 429:
                expect_limited(r, 10, "a refused upload")
                expect(int(r.hget("Retry-After")) <= 6, "Retry-After at 10 a minute",
                       "<= 6 s (one permit refills every 6 s)", r.hget("Retry-After"))
        expect_eq("alice's rows", 10, p.rows(alice))
        bob, btok = p.user()
        r = p.put(1, btok, "b.bin")
        expect_eq("another user's upload", 201, r.status)
        expect_eq("alice once more (still over)", 429, p.put(0, tok, "a.bin").status)
        rejected = sum(metrics(s.port).value("ringup_ratelimit_decisions_total",
                                             outcome="rejected", scope="user") or 0
                       for s in p.servers)
        expect_eq("rejections counted (user scope)", 7, rejected)


@_test("ratelimit: global limit 6 exact across two processes and four users")
def t_global_exact(ctx):
    with db_routes.TestDb(ctx) as db, RedisServer() as redis:
        p = Pair(ctx, db, redis, 100, 6)
        toks = [p.user()[1] for _ in range(4)]
        res = all_at_once([lambda i=i: p.put(i, toks[i % 4], "g%d.bin" % i) for i in range(12)])
        expect_eq("statuses of 12 uploads at a global limit of 6", [201] * 6 + [429] * 6,
                  sorted(r.status for r in res))
        for r in res:
            if r.status == 429:
                expect_limited(r, 6, "a refused upload (global)")
        rejected = sum(metrics(s.port).value("ringup_ratelimit_decisions_total",
                                             outcome="rejected", scope="global") or 0
                       for s in p.servers)
        expect_eq("rejections counted (global scope)", 6, rejected)


@_test("ratelimit: a client that waits Retry-After gets through")
def t_retry_after_honest(ctx):
    with db_routes.TestDb(ctx) as db, RedisServer() as redis:
        p = Pair(ctx, db, redis, 30, 0)  # one permit every 2 s
        _, tok = p.user()
        for i in range(30):
            expect_eq("upload %d of 30" % (i + 1), 201, p.put(i, tok, "r%d.bin" % i).status)
        r = p.put(0, tok, "over.bin")
        expect_limited(r, 30, "the 31st upload")
        wait = int(r.hget("Retry-After"))
        expect(1 <= wait <= 2, "Retry-After at 30 a minute", "1..2 s", wait)
        time.sleep(wait)
        r = p.put(1, tok, "after.bin")
        expect_eq("the upload after waiting Retry-After", 201, r.status)


@_test("ratelimit: the 429 comes before the body (Content-Length of 5 MiB unsent; "
       "Expect: 100-continue gets 429, not 100)")
def t_before_body(ctx):
    with db_routes.TestDb(ctx) as db, RedisServer() as redis:
        p = Pair(ctx, db, redis, 1, 0)
        _, tok = p.user()
        expect_eq("the first upload", 201, p.put(0, tok).status)
        for expect_continue in (False, True):
            c = Conn(p.servers[1].port, timeout=10.0)
            try:
                hs = [("Authorization", "Bearer " + tok), ("Content-Length", str(5 << 20))]
                if expect_continue:
                    hs.append(("Expect", "100-continue"))
                c.send(request("PUT", "/v1/files/big.bin", hs))
                r = c.read_response(what="the answer to a head without its body", timeout=5.0)
            finally:
                c.close()
            expect_limited(r, 1, "an upload over the limit, body unsent")
        expect_eq("files stored", 1, len(objects(p.storage)))


@_test("ratelimit: a form of 3 files counts 3; a form that does not fit is refused (429) "
       "and leaves no file, no row, and no budget used")
def t_multipart(ctx):
    with db_routes.TestDb(ctx) as db, RedisServer() as redis:
        p = Pair(ctx, db, redis, 5, 0)
        user, tok = p.user()

        def post_form(i, n):
            body, b = form([("f%d" % k, "m%d.bin" % k, os.urandom(1000), None)
                            for k in range(n)])
            return post(p.servers[i].port, body, tok,
                        headers=[("Content-Type", "multipart/form-data; boundary=%s" % b)])
        r = post_form(0, 3)
        expect_eq("a form of 3 files", 201, r.status)
        expect_eq("rows after it", 3, p.rows(user))
        stored = sorted(objects(p.storage))
        r = post_form(1, 3)
        # Its first permit taken, 1 is left when the other 2 are asked for.
        expect_limited(r, 5, "a form of 3 with 2 permits left", remaining=1)
        expect_eq("rows after the refused form", 3, p.rows(user))
        expect_eq("files after the refused form", stored, sorted(objects(p.storage)))
        # It used no budget: two single uploads fit, the third does not.
        expect_eq("upload 4 of 5", 201, p.put(0, tok).status)
        expect_eq("upload 5 of 5", 201, p.put(1, tok).status)
        expect_eq("upload 6 of 5", 429, p.put(0, tok).status)


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


@_test("ratelimit: Redis stopped mid-load: local limits (mode 0, each process its share), no "
       "crash, no leaked descriptor; Redis back: shared again")
def t_redis_down(ctx):
    with db_routes.TestDb(ctx) as db, RedisServer() as redis:
        p = Pair(ctx, db, redis, 20, 0)
        for s in p.servers:
            wait_metric(s.port, "ringup_ratelimit_instances", 2, "both instances seen",
                        timeout=12.0)
        _, ltok = p.user()
        statuses = []
        stop = threading.Event()

        def load():
            i = 0
            while not stop.is_set():
                try:
                    statuses.append(p.put(i, ltok, "l%d.bin" % i).status)
                except Fail as e:
                    statuses.append(str(e))
                i += 1
                time.sleep(0.02)
        t = threading.Thread(target=load)
        t.start()
        try:
            time.sleep(0.5)
            fds = [fd_count(s.proc.pid) for s in p.servers]
            redis.stop()
            for s in p.servers:
                wait_metric(s.port, "ringup_ratelimit_mode", 0, "limits local with Redis down")
            # A fresh user on one process: its share, 20 / 2 instances.
            _, tok = p.user()
            codes = [p.put(0, tok, "d%d.bin" % i).status for i in range(14)]
            expect_eq("uploads of a fresh user on one process, Redis down",
                      [201] * 10 + [429] * 4, codes)
            local = metrics(p.servers[0].port).value("ringup_ratelimit_local_decisions_total")
            expect(local >= 14, "local decisions counted", ">= 14", local)
            redis.start()
            for s in p.servers:
                wait_metric(s.port, "ringup_ratelimit_mode", 1, "limits shared again")
            time.sleep(0.5)
        finally:
            stop.set()
            t.join(30)
        bad = [s for s in statuses if s not in (201, 429)]
        expect(not bad and statuses, "the load's answers across the outage", "201 or 429 only",
               "%d answers, others: %r" % (len(statuses), bad[:5]))
        calls = metrics(p.servers[1].port).value("ringup_ratelimit_redis_calls_total")
        _, tok = p.user()
        expect_eq("an upload with Redis back", 201, p.put(1, tok).status)
        expect(metrics(p.servers[1].port).value("ringup_ratelimit_redis_calls_total") > calls,
               "the decision went to Redis again", "more lease calls", calls)
        for s, before in zip(p.servers, fds):
            expect(s.alive(), "server alive after the outage", "running", "exited")
            now = fd_count(s.proc.pid)
            expect(now <= before + 2, "descriptors of a server after the outage",
                   "<= %d (before: %d)" % (before + 2, before), now)
