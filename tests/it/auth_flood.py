"""Integration tests of token lookups under pressure, against PostgreSQL.

A flood of random well-formed tokens must not take the database from users
whose tokens are cached: lookups of the same token in flight are shared,
lookups of unknown tokens are capped per worker (503 overloaded past the
cap), and a connection that keeps presenting bad tokens is closed.

The database is made slow on purpose by a background psql holding
ACCESS EXCLUSIVE on api_tokens: every lookup then waits, so lookups pile up
the way they do when the database is slow and the flood is fast. Queries are
counted twice: by the server (ringup_auth_lookups_total) and by PostgreSQL
(scans of api_tokens in pg_stat_user_tables, flushed when the server's
connections close).

The flood runs in a child process (this file run as a script) so that the
valid client's thread here does not compete with it for Python's lock.

run.py hands its @test decorator to register(); nothing runs at import.
Only the Python standard library is used; all traffic goes to 127.0.0.1.
"""

import base64
import collections
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import (HOST, Conn, Fail, expect, expect_closed, expect_eq,  # noqa: E402
                     parse_response, request, short)

AUTH_STRIKES_MAX = 4    # engine/db/auth.h
AUTH_LOOKUPS_MAX = 128  # engine/db/auth.h
NO_LIMITS = ("--upload-rate-limit", 1000000000, "--global-rate-limit", 1000000000)

_TESTS = harness.Tests()
register = _TESTS.register  # run.py hands its @test decorator to this
_test = _TESTS.test


def new_token():
    return "rgu_" + base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


def token_scans(db):
    """Scans of api_tokens so far: one per token lookup the database ran."""
    return int(db.scalar("select coalesce(seq_scan, 0) + coalesce(idx_scan, 0) from "
                         "pg_stat_user_tables where relname = 'api_tokens'"))


def settled_scans(db, before):
    """token_scans() once the server's backends have gone and flushed their counts."""
    deadline = time.monotonic() + 5.0
    while True:
        left = int(db.scalar("select count(*) from pg_stat_activity where datname = current_"
                             "database() and pid <> pg_backend_pid()"))
        if left == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return token_scans(db) - before


def lock_tokens(db, seconds):
    """A background psql holding ACCESS EXCLUSIVE on api_tokens for seconds (lookups wait)."""
    p = db.popen("BEGIN; LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE; "
                 "SELECT pg_sleep(%s); COMMIT;" % seconds)
    sql = ("select count(*) from pg_locks l join pg_class c on c.oid = l.relation "
           "where c.relname = 'api_tokens' and l.mode = 'AccessExclusiveLock' and l.granted")
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if db.scalar(sql) != "0":
            return p
        time.sleep(0.05)
    p.kill()
    p.wait(5)
    raise Fail("the background psql did not get its lock on api_tokens within 5 s")


def unlocked(p, timeout):
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
        raise Fail("the background psql holding the lock did not finish in %.0f s" % timeout)
    expect(p.returncode == 0, "the background psql holding the lock failed", "exit 0",
           p.returncode, "stderr: %s" % short(err))


def get_req(token, path="/v1/files"):
    return request("GET", path, [("Authorization", "Bearer " + token)])


def deltas(m0, m1, names):
    return {n: (m1.value(n) or 0) - (m0.value(n) or 0) for n in names}


# ==========================================================================
# the flood (child process)


def flood(port, seconds, nconns):
    """nconns connections sending GET /v1/files with a new random token each time, for
    seconds; a closed connection is opened again. Returns counts."""
    sel = selectors.DefaultSelector()
    stats = collections.Counter()
    statuses = collections.Counter()
    end = time.monotonic() + seconds

    def start():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.connect_ex((HOST, port))
        stats["connections"] += 1
        sel.register(s, selectors.EVENT_WRITE, {"buf": b""})

    def drop(s, why):
        stats[why] += 1
        sel.unregister(s)
        s.close()
        if time.monotonic() < end:
            start()

    def send(s, st):
        try:
            s.send(get_req(new_token()))
        except OSError:
            drop(s, "errors")
            return
        stats["requests"] += 1
        st["buf"] = b""
        sel.modify(s, selectors.EVENT_READ, st)

    for _ in range(nconns):
        start()
    while time.monotonic() < end:
        for key, ev in sel.select(timeout=0.1):
            s, st = key.fileobj, key.data
            if ev & selectors.EVENT_WRITE:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    drop(s, "errors")
                    continue
                send(s, st)
                continue
            try:
                d = s.recv(65536)
            except OSError:
                drop(s, "errors")
                continue
            if not d:
                drop(s, "closed")
                continue
            st["buf"] += d
            r = parse_response(st["buf"])
            if r is None:
                continue
            resp = r[0]
            statuses[resp.status] += 1
            if "close" in resp.tokens("Connection"):
                drop(s, "closed")
            else:
                send(s, st)
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    return {"statuses": {str(k): v for k, v in statuses.items()}, "stats": dict(stats)}


def start_flood(port, seconds, nconns):
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--flood", str(port),
                             str(seconds), str(nconns)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def flood_result(p, seconds):
    try:
        out, err = p.communicate(timeout=seconds + 20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
        raise Fail("the flood did not end within %.0f s of its time" % (seconds + 20))
    expect(p.returncode == 0, "the flood process failed", "exit 0", p.returncode,
           "stderr: %s" % short(err.decode("utf-8", "replace"), 800))
    return json.loads(out)


# ==========================================================================
# the valid client (a thread here)


class Valid:
    """One keep-alive client with a cached token: uploads a small file, then lists,
    again and again, for seconds; counts statuses and errors."""

    def __init__(self, port, token, seconds):
        self.port, self.token, self.seconds = port, token, seconds
        self.status = collections.Counter()
        self.codes = collections.Counter()
        self.errors = []
        self.slowest = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def join(self):
        self.thread.join(self.seconds + 30)
        return not self.thread.is_alive()

    def _one(self, c, i):
        body = b"x" * 1000
        reqs = (request("PUT", "/v1/files/valid-%d.bin" % i,
                        [("Authorization", "Bearer " + self.token),
                         ("Content-Length", str(len(body)))], body),
                get_req(self.token, "/v1/files?limit=5"))
        for req in reqs:
            t = time.monotonic()
            c.send(req)
            r = c.read_response(timeout=20.0, what="the valid client's response")
            self.slowest = max(self.slowest, time.monotonic() - t)
            self.status[r.status] += 1
            if r.status >= 300:
                try:
                    self.codes[json.loads(r.body)["error"]["code"]] += 1
                except (ValueError, KeyError, TypeError):
                    self.codes["(none)"] += 1
            if "close" in r.tokens("Connection"):
                return False
        return True

    def _run(self):
        end = time.monotonic() + self.seconds
        c = None
        i = 0
        while time.monotonic() < end:
            i += 1
            try:
                if c is None:
                    c = Conn(self.port, timeout=20.0)
                if not self._one(c, i):
                    c.close()
                    c = None
            except (Fail, OSError) as e:
                self.errors.append(str(e))
                if c is not None:
                    c.close()
                c = None
                time.sleep(0.05)
        if c is not None:
            c.close()

    def summary(self):
        return "statuses %s, error codes %s, %d connection errors, slowest %.2f s" % (
            dict(sorted(self.status.items())), dict(self.codes), len(self.errors), self.slowest)


# ==========================================================================
# tests


def _db():
    import db_routes  # noqa: E402 (imported late: this file also runs as a script)
    return db_routes


@_test("auth: requests with the same uncached token wait for one lookup and all get its answer")
def t_coalesce(ctx):
    dbr = _db()
    n = 20
    with dbr.TestDb(ctx) as db:
        tok = db.token("alice")
        fid = db.add_file("alice")
        s = dbr.db_server(ctx, db, workers=1)
        m0 = dbr.scrape(s.port)
        scans0 = token_scans(db)
        bad = new_token()
        locker = lock_tokens(db, 1.5)
        conns = []
        try:
            for i in range(2 * n):
                c = Conn(s.port, timeout=15.0)
                c.send(get_req(tok if i % 2 == 0 else bad))
                conns.append(c)
        finally:
            unlocked(locker, 15.0)
        for i, c in enumerate(conns):
            r = c.read_response(timeout=15.0, what="response %d" % i)
            if i % 2 == 0:
                doc = dbr.ok_json(r, "GET /v1/files with alice's token (request %d)" % i)
                expect_eq("alice's listing (request %d)" % i, [fid], dbr.ids(doc))
            else:
                dbr.expect_401(r, "GET /v1/files with an unknown token (request %d)" % i)
            c.close()
        d = deltas(m0, dbr.scrape(s.port),
                   ("ringup_auth_lookups_total", "ringup_auth_coalesced_total"))
        s.stop()
        scans = settled_scans(db, scans0)
        ctx.note("%d requests with 2 tokens: metrics %s, api_tokens scans %d"
                 % (2 * n, d, scans))
        expect_eq("token lookups sent for %d requests with 2 tokens "
                  "(ringup_auth_lookups_total)" % (2 * n), 2, d["ringup_auth_lookups_total"])
        expect_eq("requests that waited for a lookup in flight (ringup_auth_coalesced_total)",
                  2 * n - 2, d["ringup_auth_coalesced_total"])
        expect_eq("api_tokens scans in PostgreSQL for %d requests with 2 tokens" % (2 * n), 2,
                  scans)


@_test("auth: a connection is answered 401 and closed at its %dth bad token; "
       "fewer do not taint a valid one" % AUTH_STRIKES_MAX)
def t_strikes(ctx):
    dbr = _db()
    with dbr.TestDb(ctx) as db:
        tok = db.token("alice")
        s = dbr.db_server(ctx, db, workers=1)
        m0 = dbr.scrape(s.port)
        c = Conn(s.port)
        bads = [get_req(new_token()) for _ in range(AUTH_STRIKES_MAX - 2)]
        bads.append(request("GET", "/v1/files", [("Authorization", "Bearer nope")]))
        for i, req in enumerate(bads):
            c.send(req)
            r = c.read_response(what="bad token %d" % (i + 1))
            dbr.expect_401(r, "bad token %d of %d" % (i + 1, AUTH_STRIKES_MAX))
            harness.expect_no_close_header(r)
        c.send(get_req(tok))
        dbr.ok_json(c.read_response(what="alice's token after %d bad ones" % len(bads)),
                    "GET /v1/files with a valid token after %d bad ones" % len(bads))
        c.send(get_req(new_token()))
        r = c.read_response(what="bad token %d" % AUTH_STRIKES_MAX)
        dbr.expect_401(r, "bad token %d of %d" % (AUTH_STRIKES_MAX, AUTH_STRIKES_MAX))
        harness.expect_close_header(r)
        expect_closed(c, what="connection after %d bad tokens" % AUTH_STRIKES_MAX)
        d = deltas(m0, dbr.scrape(s.port), ("ringup_auth_strikeouts_total",))
        expect_eq("ringup_auth_strikeouts_total", 1, d["ringup_auth_strikeouts_total"])
        # A new connection starts with none.
        c = Conn(s.port)
        c.send(get_req(new_token()))
        r = c.read_response(what="a bad token on a new connection")
        dbr.expect_401(r, "a bad token on a new connection")
        harness.expect_no_close_header(r)
        c.close()


FLOOD_CONNS = 1400  # more than one worker's pool can queue (4 x 16 in flight + 1024 waiting)
FLOOD_S = 4.0
LOCK_S = 2.5        # under the 5 s token cache: the valid token stays cached meanwhile


@_test("auth: a flood of random tokens on %d connections while the database is slow: "
       "a client with a cached token keeps uploading and listing without a 503"
       % FLOOD_CONNS)
def t_flood(ctx):
    dbr = _db()
    with dbr.TestDb(ctx) as db:
        tok = db.token("alice")
        storage = os.path.join(harness.tmpdir(), "store")
        os.mkdir(storage)
        s = dbr.db_server(ctx, db, "--storage-dir", storage, "--db-pool-min", 1,
                          "--db-pool-max", 4, *NO_LIMITS, workers=1)
        dbr.listing(s.port, tok, what="GET /v1/files: alice's token, cached from here on")
        m0 = dbr.scrape(s.port)
        scans0 = token_scans(db)
        locker = lock_tokens(db, LOCK_S)
        try:
            fl = start_flood(s.port, FLOOD_S, FLOOD_CONNS)
            time.sleep(0.3)  # the flood's first requests are in
            valid = Valid(s.port, tok, FLOOD_S - 0.3).start()
            res = flood_result(fl, FLOOD_S)
            finished = valid.join()
        finally:
            unlocked(locker, 20.0)
        names = ("ringup_auth_lookups_total", "ringup_auth_coalesced_total",
                 "ringup_auth_refused_total", "ringup_auth_strikeouts_total",
                 "ringup_db_rejected_total", "ringup_auth_cache_misses_total")
        d = deltas(m0, dbr.scrape(s.port), names)
        s.stop()
        scans = settled_scans(db, scans0)
        ctx.note("flood: %s" % json.dumps(res, sort_keys=True))
        ctx.note("valid client: %s" % valid.summary())
        ctx.note("server: %s; api_tokens scans in PostgreSQL: %d" % (d, scans))
        expect(finished, "the valid client did not finish", "done", "still running")
        expect(valid.status[503] == 0 and not valid.errors,
               "the client with a cached token met the flood",
               "no 503 and no connection errors", valid.summary(), *valid.errors[:5])
        expect(valid.status[200] >= 1 and valid.status[201] >= 1,
               "the client with a cached token got nowhere", "uploads (201) and listings (200)",
               valid.summary())
        expect(res["stats"].get("requests", 0) > FLOOD_CONNS,
               "the flood sent fewer requests than it has connections", "> %d" % FLOOD_CONNS,
               res["stats"])
        expect(d["ringup_auth_lookups_total"] < res["stats"]["requests"],
               "every flooded token cost a lookup", "fewer lookups than flood requests",
               "%s lookups" % d["ringup_auth_lookups_total"])


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--flood":
        print(json.dumps(flood(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))))
        sys.exit(0)
    sys.exit("usage: auth_flood.py --flood PORT SECONDS CONNECTIONS (run.py runs the tests)")
