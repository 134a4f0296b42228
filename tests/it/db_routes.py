"""Integration tests of the /v1 metadata routes against PostgreSQL.

Bearer authentication (and its per-worker cache), ownership, keyset
pagination, DB_QUERY_TIMEOUT, lost and unreachable databases, the connection
pool's sizing and idle shrink, and the db metrics.

Every test makes its own database (ringup_routes_<pid>_<n>) on the server
that DATABASE_URL names (its host= parameter: the socket directory of
tools/devstack), applies the schema with `ringup migrate`, inserts tokens and
rows itself, and drops the database at the end. Without DATABASE_URL every
test fails and says so.

run.py hands its @test decorator to register(); nothing runs at import.
Only the Python standard library is used; all traffic goes to 127.0.0.1.
"""

import base64
import collections
import glob
import hashlib
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid

import harness
from harness import (HOST, Fail, expect, expect_eq, expect_error, expect_json_type,
                     expect_status, http, parse_response, request, short)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DB_PREFIX = "ringup_routes_"
TOKEN_RE = re.compile(r"^rgu_[A-Za-z0-9_-]{43}$")
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
FIELDS = ["id", "name", "size", "mime", "sha256", "status", "created_at", "processed_at",
          "error"]
SEP = "\x1f"  # psql field separator (never inside the values these tests store)

_TESTS = harness.Tests()
_SEQ = [0]
_HELP = {}


register = _TESTS.register  # run.py hands its @test decorator to this
_test = _TESTS.test


# ==========================================================================
# the PostgreSQL server and a database per test


def pg_server():
    """host/port/user of the server DATABASE_URL names; Fail when it is not set."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        raise Fail("DATABASE_URL is not set: the db tests need a PostgreSQL server to make "
                   "their own databases on",
                   "run the suite through tools/run-tests (it exports the DATABASE_URL of "
                   "tools/devstack), or: eval \"$(tools/devstack env)\"; export DATABASE_URL")
    params = {}
    if re.match(r"^postgres(ql)?://", url):
        u = urllib.parse.urlsplit(url)
        if u.hostname:
            params["host"] = urllib.parse.unquote(u.hostname)
        if u.port:
            params["port"] = str(u.port)
        if u.username:
            params["user"] = urllib.parse.unquote(u.username)
        for k, v in urllib.parse.parse_qsl(u.query, keep_blank_values=True):
            params[k] = v
    else:
        for m in re.finditer(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", url):
            v = m.group(2)
            if v.startswith("'"):
                v = re.sub(r"\\(.)", r"\1", v[1:-1])
            params[m.group(1)] = v
    if not params.get("host"):
        raise Fail("DATABASE_URL names no host (expected e.g. postgresql:///ringup?host=/path)",
                   "DATABASE_URL=%s" % url)
    return {k: params[k] for k in ("host", "port", "user") if params.get(k)}


def pg_env():
    """The environment for psql: no PG* variable redirects it (password ones stay)."""
    e = dict(os.environ)
    for k in ("PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE",
              "PGSERVICEFILE", "PGOPTIONS", "PGTARGETSESSIONATTRS", "PGAPPNAME"):
        e.pop(k, None)
    e["PGCONNECT_TIMEOUT"] = "5"
    return e


def q(s):
    """An SQL string literal."""
    return "'" + str(s).replace("'", "''") + "'"


def new_token():
    """A token in the format `ringup token create` prints."""
    return "rgu_" + base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


def cli_help(ctx):
    if ctx.bin not in _HELP:
        r = ctx.cli("--help")
        _HELP[ctx.bin] = r.out + r.err
    return _HELP[ctx.bin]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TestDb:
    """A fresh database for one test: create(), sql(), tokens and rows, drop()."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.srv = pg_server()
        _SEQ[0] += 1
        self.name = "%s%d_%d" % (DB_PREFIX, os.getpid(), _SEQ[0])
        qs = [("host", self.srv["host"])]
        for k in ("port", "user"):
            if k in self.srv:
                qs.append((k, self.srv[k]))
        self.url = "postgresql:///%s?%s" % (self.name, urllib.parse.urlencode(qs, safe="/"))
        self.created = False

    # -- psql

    def _cmd(self, db):
        cmd = ["psql", "-X", "-q", "-t", "-A", "-F", SEP, "-v", "ON_ERROR_STOP=1",
               "-h", self.srv["host"], "-d", db]
        if "port" in self.srv:
            cmd += ["-p", self.srv["port"]]
        if "user" in self.srv:
            cmd += ["-U", self.srv["user"]]
        return cmd

    def _run(self, cmd, what, timeout):
        try:
            p = subprocess.run(cmd, env=pg_env(), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        except FileNotFoundError:
            raise Fail("psql is not installed (the db tests drive PostgreSQL with it)")
        except subprocess.TimeoutExpired:
            raise Fail("psql did not finish within %.0f s" % timeout, "sql: %s" % short(what))
        if p.returncode != 0:
            raise Fail("psql failed (exit %d)" % p.returncode, "sql: %s" % short(what, 500),
                       "stderr: %s" % short(p.stderr.decode("utf-8", "replace"), 800))
        return p.stdout.decode("utf-8", "replace")

    def sql(self, text, db=None, timeout=20.0):
        """Runs SQL; the rows of its last statement as lists of strings."""
        out = self._run(self._cmd(db or self.name) + ["-c", text], text, timeout)
        return [line.split(SEP) for line in out.split("\n") if line != ""]

    def scalar(self, text, db=None):
        rows = self.sql(text, db=db)
        expect(len(rows) == 1 and len(rows[0]) == 1, "SQL returned no single value",
               "one value", repr(rows), "sql: %s" % text)
        return rows[0][0]

    def popen(self, text):
        """psql running text in the background (e.g. a transaction holding a lock)."""
        return subprocess.Popen(self._cmd(self.name) + ["-c", text], env=pg_env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    # -- lifecycle

    def create(self):
        self._sweep_stale()
        self.sql('CREATE DATABASE "%s"' % self.name, db="postgres")
        self.created = True
        self.migrate()
        return self

    def migrate(self):
        r = self.ctx.cli("migrate", env={"DATABASE_URL": self.url}, timeout=30.0)
        if r.rc == 0:
            return
        if "migrate" in cli_help(self.ctx):
            raise Fail("ringup migrate failed on a new database", *r.describe())
        # A binary without `migrate`: the same migrations, in name order.
        files = sorted(glob.glob(os.path.join(REPO, "engine", "sql", "*.sql")))
        expect(files, "no migrations in engine/sql", "*.sql files", "none")
        for f in files:
            self._run(self._cmd(self.name) + ["-1", "-f", f], f, 30.0)
        self.ctx.note("this ringup has no migrate command; applied engine/sql/*.sql with psql")

    def terminate_backends(self, db=None):
        return self.sql("select pg_terminate_backend(pid) from pg_stat_activity where "
                        "datname = %s and pid <> pg_backend_pid()" % q(db or self.name),
                        db="postgres")

    def _drop(self, name):
        last = None
        for _ in range(3):
            try:
                self.terminate_backends(name)
                self.sql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name, db="postgres")
                return
            except Fail as e:
                last = e
                time.sleep(0.2)
        raise last

    def drop(self):
        if self.created:
            self._drop(self.name)
            self.created = False

    def _sweep_stale(self):
        """Drops databases this module left behind in runs that no longer exist."""
        rows = self.sql("select datname from pg_database where datname like %s "
                        "order by datname limit 50" % q(DB_PREFIX + "%"), db="postgres")
        for (name,) in rows:
            m = re.match(r"^%s(\d+)_\d+$" % re.escape(DB_PREFIX), name)
            if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
                try:
                    self._drop(name)
                except Fail:
                    pass

    def __enter__(self):
        return self.create()

    def __exit__(self, et, ev, tb):
        """Stops this test's servers (their connections would block the drop), then
        drops the database. A server that died during the test fails it."""
        crashed = []
        for srv in harness.SCOPE.servers:
            if srv.stopped:
                continue
            if srv.sigterm_at is None and srv.proc.poll() is not None:
                crashed.append("%s: exit %s" % (" ".join(srv.cmd[1:]),
                                                harness.describe_rc(srv.proc.returncode)))
            rc = srv.stop(10.0)
            if srv.killed:
                self.ctx.note("server needed SIGKILL: still running 10 s after SIGTERM")
            elif rc != 0 and not crashed:
                self.ctx.note("server exit status after SIGTERM: %s (expected 0)"
                              % harness.describe_rc(rc))
        try:
            self.drop()
        except Fail as e:
            self.ctx.note("could not drop database %s: %s %s" % (self.name, e.summary,
                                                                  " ".join(e.details)))
        if crashed and et is None:
            raise Fail("server exited during the test", *crashed)
        if crashed and isinstance(ev, Fail):
            ev.details.append("server had exited during the test: %s" % "; ".join(crashed))
        return False

    # -- tokens and rows

    def token(self, user):
        """A new token of user, from `ringup token create` (its first stdout line)."""
        if "token create" not in cli_help(self.ctx):
            tok = new_token()
            self.insert_token(user, tok)
            return tok
        r = self.ctx.cli("token", "create", "--user", user, env={"DATABASE_URL": self.url})
        expect(r.rc == 0, "ringup token create --user %s failed" % user, "exit 0",
               harness.describe_rc(r.rc), *r.describe())
        line = r.out.split("\n")[0]
        expect(TOKEN_RE.match(line), "ringup token create: stdout line 1 must be the token",
               "rgu_ + 43 base64url characters", repr(line), *r.describe())
        n = self.scalar("select count(*) from api_tokens where user_name = %s and token_hash = "
                        "sha256(convert_to(%s, 'UTF8')) and revoked_at is null"
                        % (q(user), q(line)))
        expect_eq("api_tokens rows with the SHA-256 of the printed token", "1", n)
        return line

    def insert_token(self, user, tok):
        self.sql("insert into api_tokens(user_name, token_hash, prefix) values (%s, "
                 "sha256(convert_to(%s, 'UTF8')), left(%s, 12))" % (q(user), q(tok), q(tok)))

    def revoke(self, tok):
        if "token revoke" in cli_help(self.ctx):
            r = self.ctx.cli("token", "revoke", tok[:12], env={"DATABASE_URL": self.url})
            expect(r.rc == 0, "ringup token revoke PREFIX failed", "exit 0",
                   harness.describe_rc(r.rc), *r.describe())
        else:
            self.sql("update api_tokens set revoked_at = now() where prefix = %s" % q(tok[:12]))
        n = self.scalar("select count(*) from api_tokens where token_hash = "
                        "sha256(convert_to(%s, 'UTF8')) and revoked_at is not null" % q(tok))
        expect_eq("revoked api_tokens rows after the revoke", "1", n)

    def add_file(self, owner, name="f1", size=1, status="queued", created="now()", mime=None,
                 sha256=None, processed=None, error=None, fid=None):
        """Inserts one file row; returns its id."""
        fid = fid or str(uuid.uuid4())
        self.sql("insert into files(id, owner, name, size, mime, sha256, status, storage_key, "
                 "created_at, processed_at, error) values (%s, %s, %s, %d, %s, %s, %s, %s, %s, "
                 "%s, %s)" % (q(fid), q(owner), q(name), size,
                              "null" if mime is None else q(mime),
                              "null" if sha256 is None else q(sha256), q(status),
                              q("k-" + fid), created, processed or "null",
                              "null" if error is None else q(error)))
        return fid

    def file_count(self, fid):
        return int(self.scalar("select count(*) from files where id = %s" % q(fid)))

    def ringup_backends(self):
        return int(self.scalar("select count(*) from pg_stat_activity where datname = %s and "
                               "application_name = 'ringup'" % q(self.name), db="postgres"))


# ==========================================================================
# HTTP helpers


def api(port, method, path, token=None, auth=None, timeout=5.0):
    """One request on a new connection; token -> 'Authorization: Bearer token'."""
    hs = []
    if auth is not None:
        hs.append(("Authorization", auth))
    elif token is not None:
        hs.append(("Authorization", "Bearer " + token))
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        hs.append(("Content-Length", "0"))
    try:
        return http(port, method, path, hs, timeout=timeout)
    except Fail as e:
        raise Fail("%s %s: %s" % (method, path, e.summary), *e.details)


def ctx_of(what, fn, *args):
    """Runs fn(*args), prefixing a Fail's summary with what."""
    try:
        return fn(*args)
    except Fail as e:
        raise Fail("%s: %s" % (what, e.summary), *e.details)


def expect_401(r, what):
    def check():
        expect_error(r, 401, "unauthorized")
        www = r.hall("WWW-Authenticate")
        expect(len(www) == 1 and www[0].split()[0].lower() == "bearer",
               "401 needs WWW-Authenticate: Bearer", "WWW-Authenticate: Bearer", repr(www))
    ctx_of(what, check)


def expect_503(r, code, what):
    def check():
        expect_error(r, 503, code)
        ra = r.hall("Retry-After")
        expect(len(ra) == 1 and ra[0].strip().isdigit(), "503 needs a Retry-After in seconds",
               "Retry-After: N", repr(ra))
    ctx_of(what, check)


def ok_json(r, what, status=200):
    def check():
        expect_status(r, status)
        expect_json_type(r)
        return r.json()
    return ctx_of(what, check)


def listing(port, token, query="", what=None, auth=None):
    path = "/v1/files" + ("?" + query if query else "")
    doc = ok_json(api(port, "GET", path, token, auth=auth), what or "GET " + path)
    expect(isinstance(doc, dict) and isinstance(doc.get("files"), list) and "next" in doc,
           "GET %s: body must be {\"files\":[...],\"next\":...}" % path,
           '{"files":[...],"next":CURSOR|null}', short(json.dumps(doc), 300))
    expect(doc["next"] is None or (isinstance(doc["next"], str) and doc["next"]),
           "GET %s: next must be a non-empty string or null" % path, "cursor or null",
           repr(doc["next"]))
    for f in doc["files"]:
        check_shape(f, "GET %s item" % path)
    return doc


def check_shape(f, what):
    expect(isinstance(f, dict) and sorted(f) == sorted(FIELDS),
           "%s: metadata must have exactly the API.md fields" % what, ", ".join(FIELDS),
           short(json.dumps(f), 300))
    expect(TS_RE.match(str(f["created_at"])), "%s: created_at must be RFC 3339 UTC with "
           "microseconds" % what, "YYYY-MM-DDTHH:MM:SS.ffffffZ", repr(f["created_at"]))
    expect(f["processed_at"] is None or TS_RE.match(str(f["processed_at"])),
           "%s: processed_at must be null or RFC 3339 UTC with microseconds" % what,
           "null or YYYY-MM-DDTHH:MM:SS.ffffffZ", repr(f["processed_at"]))
    expect(type(f["size"]) is int, "%s: size must be a JSON integer" % what, "an integer",
           repr(f["size"]))


def ids(doc):
    return [f["id"] for f in doc["files"]]


def db_server(ctx, db, *args, workers=2, env=None, unset=("ALLOW_ANONYMOUS",), prefix=()):
    e = {"DATABASE_URL": db.url}
    e.update(env or {})
    return ctx.server(*args, env=e, unset=unset, workers=workers, prefix=prefix)


def db_server_nocache(ctx, db, *args, **kw):
    """db_server() with no Redis, so GET /v1/files/{id} always queries PostgreSQL (the metadata
    cache would answer the repeated reads these tests use to drive the pool)."""
    env = dict(kw.pop("env", None) or {})
    env["REDIS_URL"] = "unix:///nonexistent/ringup-no-redis.sock"
    return db_server(ctx, db, *args, env=env, **kw)


def scrape(port):
    r = http(port, "GET", "/metrics")
    expect_status(r, 200)
    m = harness.Metrics(r.body.decode("utf-8", "replace"))
    expect(not m.errors, "/metrics is not valid Prometheus text", "no problems", None,
           *m.errors[:10])
    return m


def mval(m, name, **labels):
    v = m.value(name, **labels)
    expect(v is not None, "metric %s%s missing" % (name, labels or ""), "a sample",
           "none; db families: %s" % ", ".join(sorted(n for n in m.types if "db" in n)))
    return v


# ==========================================================================
# load from threads (keep-alive, bounded in time and count)


class Load:
    """clients threads sending GET path with a token on keep-alive connections for
    seconds; counts statuses, 503 codes and connection errors."""

    MAX_PER_CLIENT = 200000

    def __init__(self, port, path, token, clients, seconds, req_timeout=5.0):
        self.port, self.path, self.clients = port, path, clients
        self.seconds, self.req_timeout = seconds, req_timeout
        self.req = request("GET", path, [("Authorization", "Bearer " + token)])
        self.lock = threading.Lock()
        self.status = collections.Counter()
        self.codes = collections.Counter()
        self.errors = []
        self.slowest = 0.0
        self.threads = []
        self.t0 = None

    def start(self):
        self.t0 = time.monotonic()
        for _ in range(self.clients):
            t = threading.Thread(target=self._client, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def join(self):
        limit = time.monotonic() + self.seconds + self.req_timeout + 5
        for t in self.threads:
            t.join(max(0.0, limit - time.monotonic()))
        return [t for t in self.threads if t.is_alive()]

    def _read(self, sock, buf):
        deadline = time.monotonic() + self.req_timeout
        while True:
            r = parse_response(buf)
            if r is not None:
                return r
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail("no response within %.0f s" % self.req_timeout)
            sock.settimeout(left)
            try:
                d = sock.recv(65536)
            except socket.timeout:
                raise Fail("no response within %.0f s" % self.req_timeout)
            if not d:
                raise Fail("connection closed before a response (%d bytes)" % len(buf))
            buf += d

    def _client(self):
        end = self.t0 + self.seconds
        sock, buf = None, b""
        for _ in range(self.MAX_PER_CLIENT):
            if time.monotonic() >= end:
                break
            t = time.monotonic()
            try:
                if sock is None:
                    sock = socket.create_connection((HOST, self.port), timeout=self.req_timeout)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    buf = b""
                sock.sendall(self.req)
                resp, buf = self._read(sock, buf)
            except (OSError, Fail) as e:
                with self.lock:
                    self.errors.append("%.2f s: %s" % (t - self.t0, e))
                if sock is not None:
                    sock.close()
                sock = None
                time.sleep(0.05)
                continue
            code = None
            if resp.status == 503:
                try:
                    code = json.loads(resp.body)["error"]["code"]
                except (ValueError, KeyError, TypeError):
                    code = "(no error code)"
            with self.lock:
                self.status[resp.status] += 1
                if code:
                    self.codes[code] += 1
                self.slowest = max(self.slowest, time.monotonic() - t)
            if "close" in resp.tokens("Connection"):
                sock.close()
                sock = None
        if sock is not None:
            sock.close()

    def summary(self):
        return "statuses %s, 503 codes %s, %d connection errors, slowest %.2f s" % (
            dict(sorted(self.status.items())), dict(self.codes), len(self.errors), self.slowest)


# ==========================================================================
# authentication


@_test("db: auth: no, malformed or unknown bearer token -> 401 + WWW-Authenticate; "
       "a valid one -> 200")
def t_auth_basic(ctx):
    with TestDb(ctx) as db:
        tok = db.token("alice")
        fid = db.add_file("alice")
        s = db_server(ctx, db)
        p = "/v1/files/" + fid
        for method, path in (("GET", "/v1/files"), ("GET", p), ("DELETE", p),
                             ("GET", "/v1/files/not-a-uuid")):
            expect_401(api(s.port, method, path), "%s %s without Authorization" % (method, path))
        expect_eq("rows after an unauthenticated DELETE", 1, db.file_count(fid))
        basic = base64.b64encode(b"alice:secret").decode()
        for auth in ("Bearer", "Bearer ", "Bearer abc", "Basic " + basic, "Token " + tok, tok,
                     "Bearer " + tok[:-1], "Bearer " + tok + "A", "Bearer xyz_" + tok[4:],
                     "Bearer " + tok[:20] + "!" + tok[21:]):
            expect_401(api(s.port, "GET", "/v1/files", auth=auth),
                       "GET /v1/files with Authorization: %s" % short(auth, 80))
        unknown = new_token()
        for i in range(2):  # the second answer comes from the negative cache
            expect_401(api(s.port, "GET", "/v1/files", unknown),
                       "GET /v1/files with a well-formed unknown token (try %d)" % (i + 1))
            expect_401(api(s.port, "GET", p, unknown),
                       "GET %s with a well-formed unknown token (try %d)" % (p, i + 1))
        doc = listing(s.port, tok, what="GET /v1/files with alice's token")
        expect_eq("alice's listing", [fid], ids(doc))
        ok_json(api(s.port, "GET", p, tok), "GET %s with alice's token" % p)
        doc = listing(s.port, None, auth="bearer " + tok,
                      what="GET /v1/files with a lower-case 'bearer' scheme (RFC 7235: "
                           "case-insensitive)")
        expect_eq("alice's listing ('bearer' scheme)", [fid], ids(doc))


@_test("db: auth: a token revoked before the server started -> 401; other tokens still work")
def t_auth_revoked(ctx):
    with TestDb(ctx) as db:
        keep = db.token("alice")
        gone = db.token("alice")
        fid = db.add_file("alice")
        db.revoke(gone)
        s = db_server(ctx, db)
        for i in range(2):
            expect_401(api(s.port, "GET", "/v1/files", gone),
                       "GET /v1/files with a revoked token (try %d)" % (i + 1))
            expect_401(api(s.port, "GET", "/v1/files/" + fid, gone),
                       "GET /v1/files/{id} with a revoked token (try %d)" % (i + 1))
        expect_eq("listing with alice's other token", [fid], ids(listing(s.port, keep)))


@_test("db: auth: a revoked token stops working once the 5 s token cache expires")
def t_auth_revoke_cache(ctx):
    with TestDb(ctx) as db:
        tok = db.token("alice")
        db.add_file("alice")
        s = db_server(ctx, db)
        for i in range(6):  # new connections: both workers' caches hold the token
            listing(s.port, tok, what="GET /v1/files before the revoke (%d)" % (i + 1))
        db.revoke(tok)
        t_rev = time.monotonic()
        seen = collections.Counter()
        while time.monotonic() - t_rev < 5.6:  # requests during the window keep it in use
            r = api(s.port, "GET", "/v1/files", tok)
            expect(r.status in (200, 401), "GET /v1/files while the revoke propagates",
                   "200 (cached) or 401", r.describe())
            seen[r.status] += 1
            time.sleep(0.25)
        for i in range(6):
            expect_401(api(s.port, "GET", "/v1/files", tok),
                       "GET /v1/files %.1f s after the revoke (%d)"
                       % (time.monotonic() - t_rev, i + 1))
        ctx.note("answers within 5.6 s of the revoke: %s" % dict(seen))


@_test("db: auth: an unknown token is remembered as invalid for about 1 s only")
def t_auth_negative_cache(ctx):
    with TestDb(ctx) as db:
        db.add_file("alice")
        s = db_server(ctx, db, workers=1)
        tok = new_token()
        expect_401(api(s.port, "GET", "/v1/files", tok), "GET /v1/files, token not yet stored")
        db.insert_token("alice", tok)
        t = time.monotonic()
        while True:
            r = api(s.port, "GET", "/v1/files", tok)
            if r.status == 200:
                break
            expect_401(r, "GET /v1/files after the token was stored")
            expect(time.monotonic() - t < 3.0, "a token stored after a 401 stays refused",
                   "200 within ~1 s (the negative cache lasts 1 s)",
                   "401 for %.1f s" % (time.monotonic() - t))
            time.sleep(0.2)
        listing(s.port, tok, what="GET /v1/files with the stored token")


@_test("db: auth: ALLOW_ANONYMOUS=true serves requests without Authorization as 'anonymous'")
def t_auth_anonymous(ctx):
    with TestDb(ctx) as db:
        tok = db.token("alice")
        a_id = db.add_file("alice", name="alice.txt")
        anon_id = db.add_file("anonymous", name="anon.txt")
        for how, args, env, unset in (
                ("env ALLOW_ANONYMOUS=true", (), {"ALLOW_ANONYMOUS": "true"}, ()),
                ("--allow-anonymous true", ("--allow-anonymous", "true"), None,
                 ("ALLOW_ANONYMOUS",))):
            s = db_server(ctx, db, *args, env=env, unset=unset)
            expect_401(api(s.port, "GET", "/v1/files"),
                       "%s: GET /v1/files without Authorization (no listing)" % how)
            doc = ok_json(api(s.port, "GET", "/v1/files/" + anon_id),
                          "%s: GET anonymous's file without Authorization" % how)
            expect_eq("%s: anonymous's file by id" % how, anon_id, doc.get("id"))
            expect_error(api(s.port, "GET", "/v1/files/" + a_id), 404, "not_found")
            expect_eq("%s: alice's listing with her token" % how, [a_id],
                      ids(listing(s.port, tok)))
            expect_401(api(s.port, "GET", "/v1/files", new_token()),
                       "%s: GET /v1/files with an unknown token" % how)
            expect_401(api(s.port, "GET", "/v1/files", auth="Bearer nope"),
                       "%s: GET /v1/files with a malformed token" % how)
            s.stop()


@_test("db: auth: ALLOW_ANONYMOUS=true opens uploads and reads by id only: listing, DELETE "
       "and links without Authorization -> 401")
def t_auth_anonymous_limits(ctx):
    with TestDb(ctx) as db:
        tok = db.token("alice")
        a_id = db.add_file("alice", name="alice.txt")
        anon_id = db.add_file("anonymous", name="anon.txt")
        storage = os.path.join(harness.tmpdir(), "store")
        os.mkdir(storage)
        s = db_server(ctx, db, "--storage-dir", storage, env={"ALLOW_ANONYMOUS": "true"},
                      unset=())
        r = api(s.port, "HEAD", "/v1/files")
        ctx_of("HEAD /v1/files without Authorization", expect_status, r, 401, True)
        for method, path in (("GET", "/v1/files"), ("GET", "/v1/files?limit=1000"), ("DELETE", "/v1/files/" + anon_id),
                             ("DELETE", "/v1/files/" + a_id),
                             ("POST", "/v1/files/%s/link" % anon_id)):
            expect_401(api(s.port, method, path), "%s %s without Authorization" % (method, path))
        expect_eq("anonymous's rows after an anonymous DELETE", 1, db.file_count(anon_id))
        # What stays open: an upload, and reading that file by its id.
        body = b"anonymous bytes\n" * 64
        r = http(s.port, "PUT", "/v1/files/anon.bin", [("Content-Length", str(len(body)))],
                 body)
        doc = ok_json(r, "PUT /v1/files/anon.bin without Authorization", status=201)
        fid = doc.get("id")
        expect_eq("owner of the anonymous upload", "anonymous",
                  db.scalar("select owner from files where id = %s" % q(fid)))
        meta = ok_json(api(s.port, "GET", "/v1/files/" + fid),
                       "GET /v1/files/{id} of the anonymous upload without Authorization")
        expect_eq("size of the anonymous upload", len(body), meta.get("size"))
        r = api(s.port, "GET", "/v1/files/%s/content" % fid)
        expect_status(r, 200)
        expect_eq("content of the anonymous upload", body, r.body)
        expect_error(api(s.port, "GET", "/v1/files/" + a_id), 404, "not_found")
        # A token still gets its own user's everything.
        expect_eq("alice's listing with her token", [a_id], ids(listing(s.port, tok)))
        expect_error(api(s.port, "POST", "/v1/files/%s/link" % a_id, tok), 404, "not_found")


# ==========================================================================
# files: metadata, ownership, methods


@_test("db: files: GET /v1/files/{id} metadata (types, nulls, RFC 3339 UTC microseconds)")
def t_file_metadata(ctx):
    with TestDb(ctx) as db:
        tok = db.token("alice")
        sha = hashlib.sha256(b"x").hexdigest()
        plain = db.add_file("alice", name="plain.bin", size=0,
                            created="timestamptz '2026-03-04 05:06:07+00'")
        full = db.add_file("alice", name='r\u00e9sum\u00e9 "final".pdf', size=5000000000,
                           status="failed", mime="application/pdf", sha256=sha,
                           created="timestamptz '2026-03-04 07:06:07.089012+02'",
                           processed="timestamptz '2026-03-05 23:59:59.999999+00'",
                           error="processor exited 3")
        s = db_server(ctx, db)
        want = {
            plain: {"id": plain, "name": "plain.bin", "size": 0, "mime": None, "sha256": None,
                    "status": "queued", "created_at": "2026-03-04T05:06:07.000000Z",
                    "processed_at": None, "error": None},
            full: {"id": full, "name": 'r\u00e9sum\u00e9 "final".pdf', "size": 5000000000,
                   "mime": "application/pdf", "sha256": sha, "status": "failed",
                   "created_at": "2026-03-04T05:06:07.089012Z",
                   "processed_at": "2026-03-05T23:59:59.999999Z",
                   "error": "processor exited 3"},
        }
        for fid, w in want.items():
            doc = ok_json(api(s.port, "GET", "/v1/files/" + fid, tok), "GET /v1/files/" + fid)
            check_shape(doc, "GET /v1/files/" + fid)
            expect_eq("GET /v1/files/%s body" % fid, w, doc)
        doc = listing(s.port, tok)
        expect_eq("GET /v1/files body (newest first)", [want[full], want[plain]], doc["files"])
        expect_eq("GET /v1/files next", None, doc["next"])
        up = full.upper()
        r = api(s.port, "GET", "/v1/files/" + up, tok)
        if r.status == 200:
            expect_eq("id in the answer to an upper-case id", full, r.json().get("id"))
        else:
            expect_error(r, 404, "not_found")


@_test("db: files: another user's file is 404 for GET and DELETE; its owner deletes it (204)")
def t_file_ownership(ctx):
    with TestDb(ctx) as db:
        alice = db.token("alice")
        bob = db.token("bob")
        fid = db.add_file("alice", name="mine.txt")
        bob_id = db.add_file("bob", name="bobs.txt")
        s = db_server(ctx, db)
        p = "/v1/files/" + fid
        ctx_of("bob: GET alice's file", expect_error, api(s.port, "GET", p, bob), 404,
               "not_found")
        ctx_of("bob: DELETE alice's file", expect_error, api(s.port, "DELETE", p, bob), 404,
               "not_found")
        expect_eq("alice's row after bob's DELETE", 1, db.file_count(fid))
        expect_eq("bob's listing", [bob_id], ids(listing(s.port, bob)))
        doc = ok_json(api(s.port, "GET", p, alice), "alice: GET her file")
        expect_eq("alice: id of her file", fid, doc.get("id"))
        r = api(s.port, "DELETE", p, alice)
        ctx_of("alice: DELETE her file", expect_status, r, 204)
        expect_eq("alice: DELETE 204 body", b"", r.body)
        expect_eq("alice's row after her DELETE", 0, db.file_count(fid))
        ctx_of("alice: GET after DELETE", expect_error, api(s.port, "GET", p, alice), 404,
               "not_found")
        ctx_of("alice: second DELETE", expect_error, api(s.port, "DELETE", p, alice), 404,
               "not_found")
        expect_eq("alice's listing after the delete", [], ids(listing(s.port, alice)))
        expect_eq("bob's row after alice's delete", 1, db.file_count(bob_id))
        ok_json(api(s.port, "GET", "/v1/files/" + bob_id, bob), "bob: GET his file")


@_test("db: files: malformed ids -> 404; wrong methods -> 405 with Allow")
def t_file_malformed_and_methods(ctx):
    with TestDb(ctx) as db:
        tok = db.token("alice")
        fid = db.add_file("alice")
        s = db_server(ctx, db)
        for bad in ("not-a-uuid", "123", fid[:-1], fid + "0", fid.replace("-", ""),
                    "{%s}" % fid, fid[:8] + "_" + fid[9:], "g" + fid[1:], "%20" + fid[3:]):
            for method in ("GET", "DELETE"):
                ctx_of("%s /v1/files/%s" % (method, bad), expect_error,
                       api(s.port, method, "/v1/files/" + bad, tok), 404, "not_found")
        expect_eq("rows after DELETEs of malformed ids", 1, db.file_count(fid))
        for method, path, allow in (("POST", "/v1/files", ["GET", "HEAD"]),
                                    ("DELETE", "/v1/files", ["GET", "HEAD"]),
                                    ("PATCH", "/v1/files", ["GET", "HEAD"]),
                                    ("POST", "/v1/files/" + fid, ["DELETE", "GET", "HEAD", "PUT"]),
                                    ("PATCH", "/v1/files/" + fid, ["DELETE", "GET", "HEAD", "PUT"])):
            r = api(s.port, method, path, tok)
            ctx_of("%s %s" % (method, path), expect_error, r, 405, "method_not_allowed")
            got = r.hall("Allow")
            expect(len(got) == 1, "%s %s: one Allow header" % (method, path), repr(allow),
                   repr(got))
            expect_eq("%s %s Allow" % (method, path), allow,
                      sorted(m.strip().upper() for m in got[0].split(",")))
        expect_eq("rows after the 405s", 1, db.file_count(fid))


# ==========================================================================
# pagination

ALICE_DISTINCT = 250
ALICE_TIE = 20     # rows sharing one created_at of their own
ALICE_TIE2 = 5     # rows sharing the created_at of distinct row 200
BOB_ROWS = 10


def seed_pages(db):
    """Inserts alice's and bob's rows; returns alice's ids in API order (from SQL)."""
    base = "timestamptz '2026-01-01 00:00:00.500000+00'"
    db.sql("insert into files(id, owner, name, size, status, storage_key, created_at) "
           "select gen_random_uuid(), 'alice', 'a' || i, i, 'queued', 'ka' || i, "
           "%s - interval '1 second' * i - interval '1 microsecond' * ((i * 7919) %% 1000) "
           "from generate_series(1, %d) i" % (base, ALICE_DISTINCT))
    db.sql("insert into files(id, owner, name, size, status, storage_key, created_at) "
           "select gen_random_uuid(), 'alice', 't' || i, i, 'ready', 'kt' || i, "
           "%s - interval '100.25 second' from generate_series(1, %d) i" % (base, ALICE_TIE))
    db.sql("insert into files(id, owner, name, size, status, storage_key, created_at) "
           "select gen_random_uuid(), 'alice', 'u' || i, i, 'queued', 'ku' || i, "
           "(select created_at from files where owner = 'alice' and name = 'a200') "
           "from generate_series(1, %d) i" % ALICE_TIE2)
    db.sql("insert into files(id, owner, name, size, status, storage_key, created_at) "
           "select gen_random_uuid(), 'bob', 'b' || i, i, 'queued', 'kb' || i, "
           "%s - interval '25 second' * i from generate_series(1, %d) i" % (base, BOB_ROWS - 1))
    db.sql("insert into files(id, owner, name, size, status, storage_key, created_at) "
           "values (gen_random_uuid(), 'bob', 'b-tie', 1, 'queued', 'kbt', "
           "%s - interval '100.25 second')" % base)
    return [r[0] for r in db.sql("select id from files where owner = 'alice' "
                                 "order by created_at desc, id desc")]


def walk(port, tok, limit, max_pages):
    """Follows next from the first page; returns (pages, ids)."""
    pages, out = [], []
    query = "limit=%d" % limit
    for _ in range(max_pages):
        doc = listing(port, tok, query, what="page %d (limit=%d)" % (len(pages) + 1, limit))
        pages.append(doc)
        out += ids(doc)
        if doc["next"] is None:
            return pages, out
        query = "limit=%d&after=%s" % (limit, urllib.parse.quote(doc["next"], safe=""))
    raise Fail("limit=%d: next still set after %d pages" % (limit, max_pages),
               "ids so far: %d" % len(out))


def check_order(files, what):
    keys = [(f["created_at"], f["id"]) for f in files]
    bad = [i for i in range(1, len(keys)) if keys[i] >= keys[i - 1]]
    expect(not bad, "%s: not ordered by created_at desc, id desc" % what,
           "strictly decreasing (created_at, id)",
           "first break at item %d: %r then %r" % (bad[0], keys[bad[0] - 1], keys[bad[0]])
           if bad else None)


@_test("db: list: pages of 7 walk every file once, newest first, ties broken by id")
def t_list_walk(ctx):
    with TestDb(ctx) as db:
        alice = db.token("alice")
        bob = db.token("bob")
        want = seed_pages(db)
        total = len(want)
        s = db_server(ctx, db)
        pages, got = walk(s.port, alice, 7, total // 7 + 3)
        sizes = [len(p["files"]) for p in pages]
        expect(all(n == 7 for n in sizes[:-1]) and 1 <= sizes[-1] <= 7,
               "page sizes with limit=7", "7 on every page but the last (1..7)", repr(sizes))
        dups = [i for i, c in collections.Counter(got).items() if c > 1]
        expect(not dups, "ids seen on more than one page", "none",
               "%d, e.g. %s" % (len(dups), dups[:3]))
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        expect(not missing and not extra, "pages vs alice's rows in the database",
               "all %d ids" % total, "%d missing (e.g. %s), %d not alice's (e.g. %s)"
               % (len(missing), missing[:2], len(extra), extra[:2]))
        expect_eq("id order across the pages (SQL: created_at desc, id desc)", want, got)
        check_order([f for p in pages for f in p["files"]], "pages of 7")
        expect_eq("pages", -(-total // 7), len(pages))
        # bob: his 10 rows, one of them at the same instant as alice's tie group
        bpages, bids = walk(s.port, bob, 7, 5)
        want_b = [r[0] for r in db.sql("select id from files where owner = 'bob' "
                                       "order by created_at desc, id desc")]
        expect_eq("bob's pages (limit=7)", ([7, BOB_ROWS - 7], want_b),
                  ([len(p["files"]) for p in bpages], bids))


@_test("db: list: limit=1000, the default 50, limits that fit exactly")
def t_list_limits(ctx):
    with TestDb(ctx) as db:
        alice = db.token("alice")
        want = seed_pages(db)
        total = len(want)
        s = db_server(ctx, db)
        doc = listing(s.port, alice, "limit=1000")
        expect_eq("limit=1000: ids", want, ids(doc))
        expect_eq("limit=1000: next", None, doc["next"])
        check_order(doc["files"], "limit=1000")
        doc = listing(s.port, alice)
        expect_eq("no limit: ids (default 50)", want[:50], ids(doc))
        expect(doc["next"], "no limit: next must be set (more rows follow)", "a cursor",
               repr(doc["next"]))
        doc2 = listing(s.port, alice, "after=" + urllib.parse.quote(doc["next"], safe=""))
        expect_eq("second default page", want[50:100], ids(doc2))
        doc = listing(s.port, alice, "limit=%d" % total)
        expect_eq("limit=%d (all rows): count" % total, total, len(doc["files"]))
        expect_eq("limit=%d (all rows): next" % total, None, doc["next"])
        doc = listing(s.port, alice, "limit=%d" % (total - 1))
        expect_eq("limit=%d: ids" % (total - 1), want[:-1], ids(doc))
        expect(doc["next"], "limit=%d: next must be set" % (total - 1), "a cursor",
               repr(doc["next"]))
        doc = listing(s.port, alice, "limit=%d&after=%s"
                      % (total - 1, urllib.parse.quote(doc["next"], safe="")))
        expect_eq("the page after limit=%d" % (total - 1), (want[-1:], None),
                  (ids(doc), doc["next"]))
        doc = listing(s.port, alice, "limit=1")
        expect_eq("limit=1", want[:1], ids(doc))


@_test("db: list: bad limit or cursor -> 400 bad_request")
def t_list_bad_params(ctx):
    with TestDb(ctx) as db:
        alice = db.token("alice")
        for i in range(3):
            db.add_file("alice", name="f%d" % i,
                        created="now() - interval '1 second' * %d" % i)
        s = db_server(ctx, db)
        good = listing(s.port, alice, "limit=1")["next"]
        expect(good, "limit=1 with 3 rows: next must be set", "a cursor", repr(good))

        def b64(raw):
            return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()
        ts = "2026-01-01T00:00:00.000000Z"
        bad = ["limit=0", "limit=1001", "limit=abc", "limit=-1", "limit=", "limit=99999",
               "limit=5x", "limit=1.5", "limit=10000", "after=garbage!", "after=",
               "after=" + b64("hello"), "after=" + b64(ts + "|not-a-uuid"),
               "after=" + b64(ts), "after=" + b64("yesterday|" + str(uuid.uuid4())),
               "after=" + good + "%3D", "limit=0&after=" + good, "limit=1001&after=" + good]
        for query in bad:
            path = "/v1/files?" + query
            ctx_of("GET " + path, expect_error, api(s.port, "GET", path, alice), 400,
                   "bad_request")
        listing(s.port, alice, "limit=1&after=" + good,
                what="the good cursor after the bad requests")


# ==========================================================================
# database trouble


def wait_lock(db, timeout=5.0):
    sql = ("select count(*) from pg_locks l join pg_class c on c.oid = l.relation "
           "where c.relname = 'files' and l.mode = 'AccessExclusiveLock' and l.granted")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.scalar(sql) != "0":
            return
        time.sleep(0.05)
    raise Fail("the background psql did not get its lock on files within %.0f s" % timeout)


@_test("db: DB_QUERY_TIMEOUT: a locked table -> 503 database_timeout + Retry-After; "
       "then 200 again")
def t_query_timeout(ctx):
    with TestDb(ctx) as db:
        tok = db.token("alice")
        fid = db.add_file("alice")
        s = db_server_nocache(ctx, db, "--db-query-timeout", "1000", workers=1)
        p = "/v1/files/" + fid
        ok_json(api(s.port, "GET", p, tok), "GET %s before the lock" % p)
        listing(s.port, tok, what="GET /v1/files before the lock")
        errs0 = mval(scrape(s.port), "ringup_db_query_errors_total")
        locker = db.popen("BEGIN; LOCK TABLE files IN ACCESS EXCLUSIVE MODE; "
                          "SELECT pg_sleep(5); COMMIT;")
        try:
            wait_lock(db)
            for path in (p, "/v1/files"):
                t = time.monotonic()
                r = api(s.port, "GET", path, tok, timeout=8.0)
                secs = time.monotonic() - t
                expect_503(r, "database_timeout", "GET %s while files is locked" % path)
                expect(0.8 <= secs <= 4.0, "GET %s while locked: time to the 503" % path,
                       "about 1 s (DB_QUERY_TIMEOUT=1000)", "%.2f s" % secs)
            try:
                out, err = locker.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                raise Fail("the background psql holding the lock did not finish in 10 s")
            expect(locker.returncode == 0, "the background psql holding the lock failed",
                   "exit 0", locker.returncode, "stderr: %s" % short(err))
        finally:
            if locker.poll() is None:
                locker.kill()
                locker.wait(5)
        doc = ok_json(api(s.port, "GET", p, tok), "GET %s after the lock was released" % p)
        expect_eq("id after the lock", fid, doc.get("id"))
        expect_eq("listing after the lock", [fid], ids(listing(s.port, tok)))
        errs1 = mval(scrape(s.port), "ringup_db_query_errors_total")
        expect(errs1 - errs0 >= 2, "ringup_db_query_errors_total after two timed-out queries",
               "+2 or more", "+%s" % (errs1 - errs0))


@_test("db: pg_terminate_backend under load: only 200/503, server keeps serving, "
       "connections <= DB_MAX_CONNECTIONS")
def t_terminate_backends(ctx):
    cap = 8
    with TestDb(ctx) as db:
        tok = db.token("alice")
        fid = db.add_file("alice")
        s = db_server_nocache(ctx, db, "--db-max-connections", cap, "--db-pool-min", 2,
                      "--db-pool-max", cap, workers=2)
        p = "/v1/files/" + fid
        for _ in range(4):
            ok_json(api(s.port, "GET", p, tok), "GET %s before the load" % p)
        load = Load(s.port, p, tok, clients=20, seconds=4.0).start()
        samples, killed = [], []
        kill_at = [1.0, 2.0]
        try:
            for _ in range(200):
                el = time.monotonic() - load.t0
                if el >= load.seconds:
                    break
                if kill_at and el >= kill_at[0]:
                    kill_at.pop(0)
                    rows = db.sql("select pg_terminate_backend(pid) from pg_stat_activity "
                                  "where datname = %s and application_name = 'ringup'"
                                  % q(db.name), db="postgres")
                    killed.append(len(rows))
                samples.append(db.ringup_backends())
                time.sleep(0.1)
        finally:
            hung = load.join()
        ctx.note("load: %s; backends killed %s; pg_stat_activity samples max %s (%d samples)"
                 % (load.summary(), killed, max(samples or [0]), len(samples)))
        expect(not hung, "load threads still waiting after the load", "none",
               "%d threads" % len(hung))
        expect(s.alive(), "server exited under the load", "running", "exited")
        expect(len(killed) == 2 and all(n > 0 for n in killed),
               "pg_terminate_backend found the server's connections", "2 rounds, each > 0",
               repr(killed))
        other = {k: v for k, v in load.status.items() if k not in (200, 503)}
        expect(not other, "statuses other than 200/503 under the load", "only 200 and 503",
               load.summary())
        bad503 = {k: v for k, v in load.codes.items()
                  if k not in ("database_unavailable", "database_timeout", "overloaded")}
        expect(not bad503, "503 answers with an unexpected error code",
               "database_unavailable, database_timeout or overloaded", dict(load.codes))
        expect(len(load.errors) <= 3, "connection errors or hangs under the load",
               "at most a few (3)", len(load.errors), *load.errors[:5])
        expect(load.status[200] > 0, "no 200 at all under the load", "> 0", load.summary())
        over = [n for n in samples if n > cap]
        expect(not over, "server backends in pg_stat_activity above DB_MAX_CONNECTIONS",
               "<= %d at every sample" % cap, "samples: %s" % samples)
        t = time.monotonic()
        while True:
            r = api(s.port, "GET", p, tok)
            if r.status == 200 or time.monotonic() - t > 5.0:
                break
            time.sleep(0.2)
        ok_json(r, "GET %s after the load (retried for up to 5 s)" % p)
        if time.monotonic() - t > 0.5:
            ctx.note("the first 200 after the load came %.1f s later" % (time.monotonic() - t))
        n = db.ringup_backends()
        expect(n <= cap, "server backends after the load", "<= %d" % cap, n)


@_test("db: database unreachable -> 503 database_unavailable within 5 s; /healthz 200")
def t_database_down(ctx):
    pg_server()  # like every db test, fails without DATABASE_URL
    down = {"DATABASE_URL": "postgresql:///ringup?host=/nonexistent-ringup-db"}
    # without a token lookup (anonymous reads by id): the route's own query fails
    s = ctx.server("--allow-anonymous", "true", env=down)
    fid = str(uuid.uuid4())
    for path in ("/v1/files/" + fid, "/v1/files/%s/content" % fid):
        t = time.monotonic()
        r = api(s.port, "GET", path, timeout=10.0)
        secs = time.monotonic() - t
        expect_503(r, "database_unavailable",
                   "anonymous GET %s with the database unreachable" % path)
        expect(secs < 5.0, "anonymous GET %s, database unreachable: time to the 503" % path,
               "< 5 s", "%.2f s" % secs)
    s.stop()
    # with a bearer token: its lookup fails first
    s = ctx.server(env=down, unset=("ALLOW_ANONYMOUS",))
    tok = new_token()
    for path in ("/v1/files", "/v1/files/" + str(uuid.uuid4()), "/v1/files"):
        t = time.monotonic()
        r = api(s.port, "GET", path, tok, timeout=10.0)
        secs = time.monotonic() - t
        expect_503(r, "database_unavailable", "GET %s with the database unreachable" % path)
        expect(secs < 5.0, "GET %s with the database unreachable: time to the 503" % path,
               "< 5 s", "%.2f s" % secs)
    r = http(s.port, "GET", "/healthz")
    ctx_of("GET /healthz with the database unreachable", expect_status, r, 200)
    expect_401(api(s.port, "GET", "/v1/files"),
               "GET /v1/files without a token, database unreachable")


# ==========================================================================
# pool and metrics

DB_GAUGES = ["ringup_db_connections_open", "ringup_db_connections_in_use",
             "ringup_db_connections_max", "ringup_db_wait_queue"]
DB_COUNTERS = ["ringup_db_queries_total", "ringup_db_query_errors_total"]


def type_of(m, name):
    t = m.types.get(name)
    if t is None and name.endswith("_total"):
        t = m.types.get(name[:-6])
    return t


@_test("db: metrics: pool gauges per worker, query counters and histogram, auth cache")
def t_db_metrics(ctx):
    cap, pmin = 6, 4
    with TestDb(ctx) as db:
        tok = db.token("alice")
        fid = db.add_file("alice")
        s = db_server_nocache(ctx, db, "--db-pool-min", pmin, "--db-pool-max", cap,
                      "--db-max-connections", cap, workers=2)

        def opened(m):
            v = m.value("ringup_db_connections_open", pool="primary")
            return None if v == pmin else Fail("ringup_db_connections_open (sum) at rest",
                                               "expected: %d (DB_POOL_MIN)" % pmin,
                                               "got:      %r" % v)
        deadline = time.monotonic() + 5.0
        while True:
            m0 = scrape(s.port)
            problem = opened(m0)
            if problem is None:
                break
            if time.monotonic() > deadline:
                raise problem
            time.sleep(0.1)
        problems = []
        for name in DB_GAUGES + DB_COUNTERS:
            want = "gauge" if name in DB_GAUGES else "counter"
            if type_of(m0, name) != want:
                problems.append("%s: TYPE expected %s, got %r" % (name, want, type_of(m0, name)))
            for w in ("0", "1"):
                if not m0.find(name, pool="primary", worker=w):
                    problems.append('%s{pool="primary",worker="%s"}: no sample' % (name, w))
        if type_of(m0, "ringup_db_query_duration_seconds") != "histogram":
            problems.append("ringup_db_query_duration_seconds: TYPE expected histogram, got %r"
                            % type_of(m0, "ringup_db_query_duration_seconds"))
        problems += m0.histogram_errors("ringup_db_query_duration_seconds")
        if not m0.find("ringup_db_query_duration_seconds_count", pool="primary"):
            problems.append('ringup_db_query_duration_seconds_count{pool="primary"}: no sample')
        for name in ("ringup_auth_cache_hits_total", "ringup_auth_cache_misses_total"):
            if m0.value(name) is None:
                problems.append("%s: no sample" % name)
        expect(not problems, "db metrics problems (%d)" % len(problems), None, None, *problems)
        per_worker = [m0.value("ringup_db_connections_max", pool="primary", worker=w)
                      for w in ("0", "1")]
        expect_eq("ringup_db_connections_max per worker (DB_MAX_CONNECTIONS=%d, 2 workers)"
                  % cap, [cap // 2, cap // 2], per_worker)
        n = 6
        c = harness.Conn(s.port)  # one connection: one worker, one cache
        for i in range(n):
            c.send(request("GET", "/v1/files/" + fid, [("Authorization", "Bearer " + tok)]))
            ok_json(c.read_response(what="GET /v1/files/{id} #%d" % (i + 1)),
                    "GET /v1/files/{id} #%d on one connection" % (i + 1))
        c.close()
        m1 = scrape(s.port)

        def d(name, **labels):
            return mval(m1, name, **labels) - mval(m0, name, **labels)
        moved = {
            "ringup_db_queries_total": d("ringup_db_queries_total"),
            "ringup_db_query_duration_seconds_count":
                d("ringup_db_query_duration_seconds_count", pool="primary"),
            "ringup_auth_cache_misses_total": d("ringup_auth_cache_misses_total"),
            "ringup_auth_cache_hits_total": d("ringup_auth_cache_hits_total"),
            "ringup_db_query_errors_total": d("ringup_db_query_errors_total"),
        }
        want = {"ringup_db_queries_total": (n + 1, None),
                "ringup_db_query_duration_seconds_count": (n + 1, None),
                "ringup_auth_cache_misses_total": (1, 1),
                "ringup_auth_cache_hits_total": (n - 1, n - 1),
                "ringup_db_query_errors_total": (0, 0)}
        wrong = ["%s: +%s, expected %s" % (k, moved[k], "+%d" % lo if hi == lo else
                                           ">= +%d" % lo)
                 for k, (lo, hi) in want.items()
                 if moved[k] < lo or (hi is not None and moved[k] > hi)]
        expect(not wrong, "counters after %d GETs with one token on one connection" % n,
               None, None, *wrong)
        expect_eq("ringup_db_connections_max (sum)", cap,
                  m1.value("ringup_db_connections_max", pool="primary"))
        for w in ("0", "1"):
            o = m1.value("ringup_db_connections_open", pool="primary", worker=w)
            u = m1.value("ringup_db_connections_in_use", pool="primary", worker=w)
            mx = m1.value("ringup_db_connections_max", pool="primary", worker=w)
            expect(0 <= u <= o <= mx, "worker %s: in_use <= open <= max" % w,
                   "0 <= in_use <= open <= max", "in_use %s, open %s, max %s" % (u, o, mx))
            expect_eq("worker %s: ringup_db_wait_queue at rest" % w, 0,
                      m1.value("ringup_db_wait_queue", pool="primary", worker=w))
        expect_eq("backends in pg_stat_activity (application_name=ringup)", pmin,
                  db.ringup_backends())


@_test("db: pool: grows under load, then idle connections above DB_POOL_MIN close after "
       "DB_POOL_IDLE_TIMEOUT")
def t_pool_idle_shrink(ctx):
    pmin, pmax = 2, 10
    with TestDb(ctx) as db:
        tok = db.token("alice")
        fid = db.add_file("alice")
        s = db_server_nocache(ctx, db, "--db-pool-min", pmin, "--db-pool-max", pmax,
                      "--db-max-connections", pmax, "--db-pool-idle-timeout", 1000, workers=1)
        p = "/v1/files/" + fid
        ok_json(api(s.port, "GET", p, tok), "GET %s before the load" % p)

        def open_now():
            return mval(scrape(s.port), "ringup_db_connections_open", pool="primary")
        load = Load(s.port, p, tok, clients=10, seconds=2.5).start()
        peak_pg, peak_m = 0, 0
        try:
            for _ in range(100):
                if time.monotonic() - load.t0 >= load.seconds:
                    break
                peak_pg = max(peak_pg, db.ringup_backends())
                peak_m = max(peak_m, open_now())
                time.sleep(0.1)
        finally:
            hung = load.join()
        expect(not hung, "load threads still waiting after the load", "none", len(hung))
        other = {k: v for k, v in load.status.items() if k != 200}
        expect(not other and not load.errors, "answers under the load", "only 200",
               load.summary(), *load.errors[:5])
        ctx.note("load: %s; peak backends %d, peak connections_open %d"
                 % (load.summary(), peak_pg, peak_m))
        expect(peak_pg > pmin or peak_m > pmin, "the pool did not grow under 10 clients",
               "more than DB_POOL_MIN=%d connections" % pmin,
               "peak pg_stat_activity %d, peak ringup_db_connections_open %d"
               % (peak_pg, peak_m))
        expect(peak_pg <= pmax and peak_m <= pmax, "the pool grew past DB_POOL_MAX",
               "<= %d" % pmax, "pg_stat_activity %d, metric %d" % (peak_pg, peak_m))
        t_idle = time.monotonic()
        while True:
            n_pg, n_m = db.ringup_backends(), open_now()
            if n_pg == pmin and n_m == pmin:
                break
            expect(time.monotonic() - t_idle < 5.0,
                   "idle connections above DB_POOL_MIN not closed (DB_POOL_IDLE_TIMEOUT=1000)",
                   "%d within 5 s" % pmin,
                   "pg_stat_activity %d, ringup_db_connections_open %d after %.1f s"
                   % (n_pg, n_m, time.monotonic() - t_idle))
            time.sleep(0.2)
        ctx.note("back to %d connections %.1f s after the load" % (pmin,
                                                                   time.monotonic() - t_idle))
        for _ in range(6):  # and it stays at the minimum
            time.sleep(0.25)
            n_pg, n_m = db.ringup_backends(), open_now()
            expect(n_pg == pmin and n_m == pmin, "idle pool left DB_POOL_MIN",
                   "%d" % pmin, "pg_stat_activity %d, metric %d" % (n_pg, n_m))
        ok_json(api(s.port, "GET", p, tok), "GET %s after the shrink" % p)



# ==========================================================================
# batched inserts (engine/db/db.c flush_batch) through bench/dbload, which drives
# one ring of the engine on its own thread

def dbload_path(ctx):
    """build/bench/dbload beside the binary under test (build/asan/... for asan)."""
    d = os.path.dirname(os.path.abspath(ctx.bin))
    cand = os.path.join(d, "bench", "dbload")
    if not os.path.exists(cand):
        cand = os.path.join(REPO, "build", "bench", "dbload")
    expect(os.access(cand, os.X_OK), "the dbload driver is not built",
           "an executable build/bench/dbload (make test builds it)", cand)
    return cand


def run_dbload(ctx, db, *args):
    env = dict(os.environ)
    env["DATABASE_URL"] = db.url
    p = subprocess.run([dbload_path(ctx)] + list(args), env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


@_test("db: batched inserts land every row, in both modes")
def t_batch_all_rows(ctx):
    with TestDb(ctx) as db:
        for mode in ("on", "off"):
            rc, out, err = run_dbload(ctx, db, "--rows", "3000", "--inflight", "200",
                                      "--batch", mode)
            expect(rc == 0 and "failed=0" in out, "dbload --batch %s failed" % mode,
                   "exit 0, failed=0", "exit %d: %s %s" % (rc, out.strip(), short(err, 400)))
        expect_eq("rows inserted", "6000", db.scalar("select count(*) from files"))
        # Names with quotes survive the array literal of a batch.
        expect_eq("quoted names", "6000",
                  db.scalar("select count(*) from files where name like 'row-% \"q\"'"))


@_test("db: a failing row in a batch fails alone (duplicate ids)")
def t_batch_fallback(ctx):
    with TestDb(ctx) as db:
        rc, out, err = run_dbload(ctx, db, "--rows", "2000", "--inflight", "300",
                                  "--dup-every", "50", "--batch", "on")
        expect(rc == 0 and "failed=40" in out, "duplicates did not fail alone",
               "exit 0, failed=40 (2000/50)", "exit %d: %s" % (rc, out.strip()))
        expect_eq("rows inserted", "1960", db.scalar("select count(*) from files"))


@_test("db: DB_READ_URL takes the metadata reads; writes stay on DATABASE_URL")
def t_read_replica(ctx):
    with TestDb(ctx) as db:
        tok = db.token("alice")
        fid = db.add_file("alice")
        s = db_server_nocache(ctx, db, "--db-pool-min", 2, "--db-pool-max", 4,
                      "--db-max-connections", 4, workers=1, env={"DB_READ_URL": db.url})
        for _ in range(5):
            ok_json(api(s.port, "GET", "/v1/files/%s" % fid, token=tok), "GET file via replica")
        ok_json(api(s.port, "GET", "/v1/files", token=tok), "list via replica")
        m = scrape(s.port)
        reads = m.value("ringup_db_queries_total", pool="read")
        expect(reads is not None and reads >= 6, "reads did not go to the read pool",
               "ringup_db_queries_total{pool=\"read\"} >= 6", repr(reads))
        before = m.value("ringup_db_queries_total", pool="primary") or 0
        r = api(s.port, "DELETE", "/v1/files/%s" % fid, token=tok)
        expect_status(r, 204)
        after = scrape(s.port).value("ringup_db_queries_total", pool="primary") or 0
        expect(after >= before + 1, "the DELETE did not use the primary pool",
               "primary queries to grow", "%r -> %r" % (before, after))
