#!/usr/bin/env python3
"""Integration tests for `ringup serve` (HTTP/1.1 core, limits, timeouts, shutdown,
metrics, logs) and the command line (check-config, --version, --help).

Usage: python3 tests/it/run.py --bin PATH [-k SUBSTRING]

Output is TAP: "1..N", then "ok K - name" / "not ok K - name" with "# " lines
under a failure (expected vs got, and the server's last stderr lines). The exit
status is 1 if any test failed. Every test starts its own server on a free
127.0.0.1 port and stops it with SIGTERM (SIGKILL after a grace period).
"""

import argparse
import json
import os
import re
import selectors
import signal
import socket
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    HOST, SETTINGS, Conn, Fail, Metrics, Server, check_basics, describe_rc,
    expect, expect_close_header, expect_closed, expect_eq, expect_error, expect_json_type,
    expect_no_close_header, expect_status, http, http_get, media_type, new_scope,
    parse_response, request, run_cli, short, tmpdir)
import harness  # noqa: E402

TEST_LIMIT_S = 60  # a single test past this is failed (a safety net over socket timeouts)

TESTS = []


def test(name, graceful=False):
    def deco(fn):
        TESTS.append((name, fn, graceful))
        return fn
    return deco


class Ctx:
    def __init__(self, binary):
        self.bin = binary

    def server(self, *args, env=None, unset=(), workers=2, listen=True, prefix=()):
        return Server(self.bin, args=args, env=env, unset=unset, workers=workers,
                      listen=listen, prefix=prefix).wait_ready(10.0)

    def cli(self, *args, env=None, keep_settings=False, timeout=10.0):
        return run_cli(self.bin, args, env=env, keep_settings=keep_settings, timeout=timeout)

    def note(self, text):
        harness.SCOPE.notes.append(text)


# ==========================================================================
# small helpers shared by tests

def get_ok(port, path="/healthz"):
    r = http_get(port, path)
    expect_status(r, 200)
    return r


def expect_healthz(r):
    expect_status(r, 200)
    expect_json_type(r)
    expect_eq("/healthz body", {"status": "ok"}, r.json())


def still_serving(port):
    """The server still answers /healthz on a new connection."""
    try:
        r = http_get(port, "/healthz")
    except (Fail, OSError) as e:
        raise Fail("server no longer serves /healthz after the test's traffic",
                   "error: %s" % (e.summary if isinstance(e, Fail) else repr(e)))
    expect_healthz(r)


def scrape(port):
    r = http_get(port, "/metrics")
    expect_status(r, 200)
    mt, params = media_type(r)
    expect(mt == "text/plain" and params.get("version") == "0.0.4",
           "/metrics Content-Type", "text/plain; version=0.0.4", repr(r.hget("Content-Type")))
    m = Metrics(r.body.decode("utf-8", "replace"))
    if m.errors:
        raise Fail("/metrics is not valid Prometheus text (%d problems)" % len(m.errors),
                   *m.errors[:12])
    return m


def metric(m, name, **labels):
    v = m.value(name, **labels)
    expect(v is not None, "metric %s%s missing" % (name, labels or ""), "a sample",
           "none; families: %s" % ", ".join(sorted(m.types)))
    return v


def poll_metrics(port, check, timeout=3.0):
    """Scrapes until check(m) returns None (ok) or timeout; returns (m, scrapes).
    check returns None or a Fail describing what is still wrong."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        m = scrape(port)
        n += 1
        problem = check(m)
        if problem is None:
            return m, n
        if time.monotonic() >= deadline:
            raise problem
        time.sleep(0.1)


def parse_config(out):
    """check-config stdout -> dict; Fail on a line that is not NAME=value or a repeat."""
    cfg = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        m = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if not m:
            raise Fail("check-config printed a line that is not NAME=value", "got: %r" % line)
        if m.group(1) in cfg:
            raise Fail("check-config printed %s twice" % m.group(1))
        cfg[m.group(1)] = m.group(2)
    return cfg


def config_ok(ctx, *args, env=None):
    r = ctx.cli("check-config", *args, env=env)
    expect(r.rc == 0, "check-config must exit 0", "0", describe_rc(r.rc), *r.describe())
    return parse_config(r.out)


def expect_config_error(r, name):
    expect(r.rc == 2, "bad %s: exit status" % name, "2", describe_rc(r.rc), *r.describe())
    lines = [l for l in r.err.splitlines() if l.strip()]
    expect(len(lines) == 1, "bad %s: stderr must be exactly one line" % name, "1 line",
           "%d lines: %s" % (len(lines), short(r.err, 500)))
    expect(name in lines[0], "bad %s: the error line must name the variable" % name,
           "a line containing %s" % name, repr(lines[0]))


def padded_head(total, request_line=b"GET /healthz HTTP/1.1\r\n"):
    """A request head of exactly `total` bytes (request line + headers + final CRLF),
    filled with X-Pad-NNN headers of about 1000 bytes each."""
    out = request_line + b"Host: 127.0.0.1\r\n"
    i = 0
    while True:
        rem = total - len(out) - 2
        if rem <= 0:
            break
        prefix = b"X-Pad-%03d: " % i
        n = min(1000, rem)
        if 0 < rem - n < 40:
            n = rem
        vlen = n - len(prefix) - 2
        assert vlen >= 1, "padding arithmetic"
        out += prefix + b"a" * vlen + b"\r\n"
        i += 1
    out += b"\r\n"
    assert len(out) == total, (len(out), total)
    return out


def access_lines(server):
    out = []
    for line in server.stderr_lines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("msg") == "access":
            out.append(doc)
    return out


# ==========================================================================
# command line

@test("cli: --version prints 'ringup X.Y.Z' and exits 0")
def t_version(ctx):
    r = ctx.cli("--version")
    expect(r.rc == 0, "--version exit status", "0", describe_rc(r.rc), *r.describe())
    expect(re.match(r"^ringup \d+\.\d+\.\d+\n?$", r.out), "--version output",
           "'ringup X.Y.Z'", repr(r.out))


@test("cli: --help exits 0 and prints usage")
def t_help(ctx):
    r = ctx.cli("--help")
    expect(r.rc == 0, "--help exit status", "0", describe_rc(r.rc), *r.describe())
    expect((r.out + r.err).strip(), "--help printed nothing", "usage text", "nothing")


API_DEFAULTS = {
    "LISTEN": "0.0.0.0:8080", "STORAGE_DIR": "./var/uploads",
    "DATABASE_URL": "postgresql:///ringup?host=./var/run", "DB_READ_URL": "",
    "REDIS_URL": "unix://./var/run/redis.sock", "DB_MAX_CONNECTIONS": "200",
    "DB_POOL_MIN": "20", "DB_POOL_MAX": "200", "DB_CONNECTION_TIMEOUT": "30000",
    "DB_QUERY_TIMEOUT": "60000", "DB_POOL_IDLE_TIMEOUT": "30000",
    "REDIS_MAX_CONNECTIONS": "100", "REDIS_POOL_MIN": "10", "REDIS_POOL_MAX": "100",
    "REDIS_RETRY_ATTEMPTS": "5", "REDIS_RETRY_DELAY": "2000", "REDIS_COMMAND_TIMEOUT": "10000",
    "MAX_CONCURRENT_JOBS": "100", "QUEUE_CONCURRENCY": "50", "MAX_QUEUE_SIZE": "10000",
    "PROCESSING_TIMEOUT": "300000", "ENABLE_QUEUE_PRIORITY": "true",
    "ENABLE_BACKPRESSURE": "true", "MAX_FILE_SIZE": "10485760", "MAX_FILES_PER_REQUEST": "5",
    "ENABLE_STREAMING_UPLOAD": "true", "ENABLE_MEMORY_MONITORING": "true",
    "MEMORY_THRESHOLD": "80", "UPLOAD_RATE_LIMIT": "100", "GLOBAL_RATE_LIMIT": "1000",
    "ENABLE_ADAPTIVE_RATE_LIMITING": "true", "CONNECTION_TIMEOUT": "30000",
    "SHUTDOWN_TIMEOUT": "30000", "JOB_LEASE": "30000", "CORS_ORIGINS": "*",
    "MAX_CONNECTIONS": "20000", "FSYNC": "true", "ALLOWED_TYPES": "", "PROCESSOR_CMD": "",
    "ALLOW_ANONYMOUS": "false", "TUS_EXPIRATION": "86400000", "LOG_LEVEL": "info",
    "LOG_FORMAT": "json",
}


@test("check-config: prints every setting as NAME=value with API.md defaults")
def t_config_defaults(ctx):
    cfg = config_ok(ctx)
    missing = [n for n in SETTINGS if n not in cfg]
    expect(not missing, "check-config lacks settings", "one line per API.md setting",
           "missing: %s" % ", ".join(missing))
    wrong = ["%s: expected %r, got %r" % (k, v, cfg[k]) for k, v in API_DEFAULTS.items()
             if cfg.get(k) != v]
    cpus = {str(os.cpu_count())}
    try:
        cpus.add(str(len(os.sched_getaffinity(0))))
    except (AttributeError, OSError):
        pass
    if cfg.get("WORKERS") not in cpus:
        wrong.append("WORKERS: expected the CPU count %s, got %r" % (sorted(cpus), cfg["WORKERS"]))
    host = socket.gethostname()
    if not re.match(r"^%s:\d+$" % re.escape(host), cfg.get("INSTANCE_ID", "")):
        wrong.append("INSTANCE_ID: expected %s:<pid>, got %r" % (host, cfg.get("INSTANCE_ID")))
    expect(not wrong, "check-config defaults differ from API.md (%d)" % len(wrong), None, None,
           *wrong)


@test("check-config: precedence flag > env > env file > default")
def t_config_precedence(ctx):
    d = tmpdir()
    path = os.path.join(d, "ringup.env")
    with open(path, "w") as f:
        f.write("CONNECTION_TIMEOUT=1111\n"
                "MAX_FILE_SIZE=2222\n"
                "WORKERS=3\n"
                "MAX_CONNECTIONS=66\n")
    cfg = config_ok(ctx, "--env-file", path, "--workers", "5", "--max-connections", "77",
                    env={"MAX_FILE_SIZE": "3333", "WORKERS": "4", "MEMORY_THRESHOLD": "70"})
    want = {"CONNECTION_TIMEOUT": "1111",  # file only
            "MAX_FILE_SIZE": "3333",       # env over file
            "WORKERS": "5",                # flag over env over file
            "MAX_CONNECTIONS": "77",       # flag over file
            "MEMORY_THRESHOLD": "70",      # env over default
            "SHUTDOWN_TIMEOUT": "30000"}   # default
    got = {k: cfg.get(k) for k in want}
    expect_eq("effective settings", want, got)


@test("check-config: env file comments, blank lines and quotes")
def t_config_env_file_syntax(ctx):
    d = tmpdir()
    path = os.path.join(d, "ringup.env")
    with open(path, "w") as f:
        f.write("# settings for a test run\n"
                "\n"
                "JOB_LEASE=\"12345\"\n"
                "CORS_ORIGINS='https://a.example,https://b.example'\n"
                "   # an indented comment\n"
                "# MAX_FILE_SIZE=1\n"
                "LOG_LEVEL=debug\n")
    cfg = config_ok(ctx, "--env-file", path)
    want = {"JOB_LEASE": "12345", "CORS_ORIGINS": "https://a.example,https://b.example",
            "MAX_FILE_SIZE": "10485760", "LOG_LEVEL": "debug"}
    expect_eq("settings from the env file", want, {k: cfg.get(k) for k in want})


@test("check-config: SIGNING_KEY is printed redacted")
def t_config_redacted(ctx):
    r = ctx.cli("check-config", env={"SIGNING_KEY": "s3cret"})
    expect(r.rc == 0, "check-config exit status", "0", describe_rc(r.rc), *r.describe())
    cfg = parse_config(r.out)
    expect_eq("SIGNING_KEY line", "***", cfg.get("SIGNING_KEY"))
    expect("s3cret" not in r.out + r.err, "the secret appears in check-config output",
           "no 's3cret'", short(r.out + r.err, 500))


for _label, _args, _env, _name in [
        ("WORKERS=0 in env", (), {"WORKERS": "0"}, "WORKERS"),
        ("WORKERS=abc in env", (), {"WORKERS": "abc"}, "WORKERS"),
        ("MAX_FILE_SIZE=12x in env", (), {"MAX_FILE_SIZE": "12x"}, "MAX_FILE_SIZE"),
        ("--connection-timeout abc", ("--connection-timeout", "abc"), None,
         "CONNECTION_TIMEOUT"),
        ("MAX_CONNECTIONS=ten in env file", "ENVFILE", None, "MAX_CONNECTIONS")]:
    def _make(args, env, name):
        def t(ctx):
            a = args
            if a == "ENVFILE":
                path = os.path.join(tmpdir(), "bad.env")
                with open(path, "w") as f:
                    f.write("MAX_CONNECTIONS=ten\n")
                a = ("--env-file", path)
            expect_config_error(ctx.cli("check-config", *a, env=env), name)
        return t
    test("check-config: %s -> exit 2, one line naming it" % _label)(_make(_args, _env, _name))


@test("serve: MAX_FILE_SIZE=12x in env -> exit 2, one line naming it")
def t_serve_bad_env(ctx):
    port = harness.free_port()
    r = ctx.cli("serve", "--listen", "%s:%d" % (HOST, port), "--workers", "2",
                env={"MAX_FILE_SIZE": "12x"}, timeout=5)
    expect_config_error(r, "MAX_FILE_SIZE")


@test("serve: --connection-timeout abc -> exit 2, one line naming it")
def t_serve_bad_flag(ctx):
    port = harness.free_port()
    r = ctx.cli("serve", "--listen", "%s:%d" % (HOST, port), "--workers", "2",
                "--connection-timeout", "abc", timeout=5)
    expect_config_error(r, "CONNECTION_TIMEOUT")


@test("serve: LISTEN and WORKERS from the environment")
def t_serve_env(ctx):
    s = ctx.server(workers=None, listen=False, env={"WORKERS": "1"})
    expect_healthz(http_get(s.port, "/healthz"))
    m = scrape(s.port)
    expect_eq("ringup_workers with WORKERS=1", 1, metric(m, "ringup_workers"))


# ==========================================================================
# routes and response shape

@test("healthz: GET -> 200 application/json {\"status\":\"ok\"}")
def t_healthz_get(ctx):
    s = ctx.server()
    r = http_get(s.port, "/healthz")
    expect_healthz(r)
    expect_no_close_header(r)


@test("healthz: HEAD -> 200, Content-Length of the GET body, no body bytes")
def t_healthz_head(ctx):
    s = ctx.server()
    c = Conn(s.port)
    c.send(request("GET", "/healthz") + request("HEAD", "/healthz") + request("GET", "/healthz"))
    g = c.read_response()
    expect_healthz(g)
    h = c.read_response(head=True, what="HEAD response")
    expect_status(h, 200, head=True)
    expect_eq("HEAD Content-Length", str(len(g.body)), h.hget("Content-Length"))
    expect_json_type(h)
    # If the HEAD response carried body bytes, they would precede this response.
    g2 = c.read_response(what="GET after HEAD")
    expect_healthz(g2)
    kind = c.recv_for(0.3)
    expect(kind == "idle" and not c.buf, "stray bytes after the three responses", "nothing",
           "%s %s" % (kind, short(c.buf)))


@test("healthz: POST/DELETE -> 405 method_not_allowed with Allow: GET, HEAD")
def t_healthz_405(ctx):
    s = ctx.server()
    for method in ("POST", "DELETE"):
        r = http(s.port, method, "/healthz", [("Content-Length", "0")])
        expect_error(r, 405, "method_not_allowed")
        allow = r.hall("Allow")
        expect(len(allow) == 1, "%s /healthz: one Allow header" % method, "Allow: GET, HEAD",
               repr(allow))
        expect_eq("%s /healthz Allow methods" % method, ["GET", "HEAD"],
                  sorted(m.strip().upper() for m in allow[0].split(",")))


@test("routing: unknown paths -> 404 not_found")
def t_404(ctx):
    s = ctx.server()
    for method, path in [("GET", "/nope"), ("GET", "/v1/nothing"), ("GET", "/"),
                         ("GET", "/healthzz"), ("GET", "/healthz/extra"),
                         ("POST", "/v1/nothing"), ("DELETE", "/nope")]:
        hs = [("Content-Length", "0")] if method != "GET" else []
        try:
            expect_error(http(s.port, method, path, hs), 404, "not_found")
        except Fail as e:
            raise Fail("%s %s: %s" % (method, path, e.summary), *e.details)
    r = http(s.port, "HEAD", "/nope")
    expect_status(r, 404, head=True)


# ==========================================================================
# connection handling

@test("keep-alive: 20 sequential requests on one connection")
def t_keepalive(ctx):
    s = ctx.server()
    c = Conn(s.port)
    for i in range(20):
        path = "/healthz" if i % 2 == 0 else "/nope"
        c.send(request("GET", path))
        r = c.read_response(what="response %d" % (i + 1))
        if path == "/healthz":
            expect_healthz(r)
        else:
            expect_error(r, 404, "not_found")
        expect_no_close_header(r)


@test("pipelining: 5 mixed requests in one send answered in order")
def t_pipeline_mixed(ctx):
    s = ctx.server()
    c = Conn(s.port)
    c.send(request("GET", "/healthz") + request("HEAD", "/healthz") + request("GET", "/nope")
           + request("POST", "/healthz", [("Content-Length", "0")])
           + request("GET", "/healthz"))
    expect_healthz(c.read_response(what="response 1 (GET /healthz)"))
    expect_status(c.read_response(head=True, what="response 2 (HEAD /healthz)"), 200, head=True)
    expect_error(c.read_response(what="response 3 (GET /nope)"), 404, "not_found")
    expect_error(c.read_response(what="response 4 (POST /healthz)"), 405, "method_not_allowed")
    expect_healthz(c.read_response(what="response 5 (GET /healthz)"))


@test("pipelining: 100 requests in one send")
def t_pipeline_100(ctx):
    s = ctx.server()
    c = Conn(s.port)
    c.send(b"".join(request("GET", "/healthz" if i % 10 else "/nope") for i in range(100)))
    for i in range(100):
        r = c.read_response(what="response %d of 100" % (i + 1))
        if i % 10:
            expect_healthz(r)
        else:
            expect_error(r, 404, "not_found")


@test("pipelining: 2-request pipeline split at every byte boundary")
def t_pipeline_split(ctx):
    s = ctx.server()
    data = request("GET", "/healthz") + request("GET", "/nope")
    for i in range(1, len(data)):
        c = Conn(s.port)
        try:
            c.send(data[:i])
            time.sleep(0.003)
            c.send(data[i:])
            expect_healthz(c.read_response(what="first response"))
            expect_error(c.read_response(what="second response"), 404, "not_found")
        except Fail as e:
            raise Fail("split after byte %d of %d (%s | %s): %s"
                       % (i, len(data), short(data[:i], 60), short(data[i:], 60), e.summary),
                       *e.details)
        finally:
            c.close()


@test("request sent one byte per send is served")
def t_byte_by_byte(ctx):
    s = ctx.server()
    c = Conn(s.port)
    for b in request("GET", "/healthz", [("User-Agent", "it")]):
        c.send(bytes([b]))
        time.sleep(0.002)
    expect_healthz(c.read_response())


@test("HTTP/1.0 without keep-alive: response with Connection: close, then close")
def t_http10(ctx):
    s = ctx.server()
    c = Conn(s.port)
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
    r = c.read_response()
    expect_healthz(r)
    expect_close_header(r)
    expect_closed(c)


@test("Connection: close request header: response with Connection: close, then close")
def t_conn_close(ctx):
    s = ctx.server()
    c = Conn(s.port)
    c.send(request("GET", "/healthz", [("Connection", "close")]))
    r = c.read_response()
    expect_healthz(r)
    expect_close_header(r)
    expect_closed(c)
    # A request pipelined after "Connection: close" is not answered.
    c2 = Conn(s.port)
    c2.send(request("GET", "/healthz", [("Connection", "close")]) + request("GET", "/nope"))
    r = c2.read_response()
    expect_healthz(r)
    expect_close_header(r)
    expect_closed(c2, what="connection after Connection: close (a second request was queued)")


@test("chunked body on 404 is skipped; next request on the connection served")
def t_chunked_404(ctx):
    s = ctx.server()
    c = Conn(s.port)
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    c.send(request("POST", "/nope", [("Transfer-Encoding", "chunked")], body)
           + request("GET", "/healthz"))
    r = c.read_response(what="response to the chunked POST /nope")
    expect_error(r, 404, "not_found")
    expect_no_close_header(r)
    expect_healthz(c.read_response(what="response to the following GET /healthz"))


@test("chunked body with extension and trailer, sent in pieces, on 405 is skipped")
def t_chunked_pieces(ctx):
    s = ctx.server()
    c = Conn(s.port)
    pieces = [request("POST", "/healthz", [("Transfer-Encoding", "chunked")]),
              b"3;ext=1\r\nab", b"c\r\nA\r\n0123", b"456789\r", b"\n0\r\nX-Trailer: t\r\n",
              b"\r\n" + request("GET", "/healthz")]
    for p in pieces:
        c.send(p)
        time.sleep(0.05)
    r = c.read_response(what="response to the chunked POST /healthz")
    expect_error(r, 405, "method_not_allowed")
    expect_no_close_header(r)
    expect_healthz(c.read_response(what="response to the following GET /healthz"))


@test("Content-Length body on 405 is skipped (body looks like a request)")
def t_cl_body_405(ctx):
    s = ctx.server()
    c = Conn(s.port)
    body = request("GET", "/nope")
    c.send(request("POST", "/healthz", [("Content-Length", str(len(body)))], body)
           + request("GET", "/healthz"))
    r = c.read_response(what="response to POST /healthz")
    expect_error(r, 405, "method_not_allowed")
    expect_no_close_header(r)
    expect_healthz(c.read_response(what="response to the following GET /healthz"))
    kind = c.recv_for(0.3)
    expect(kind == "idle" and not c.buf, "extra bytes: the body was parsed as a request",
           "nothing", "%s %s" % (kind, short(c.buf)))


@test("Content-Length body on 404 arriving in later sends is skipped")
def t_cl_body_404_late(ctx):
    s = ctx.server()
    c = Conn(s.port)
    c.send(request("POST", "/nope", [("Content-Length", "11")]))
    time.sleep(0.1)
    c.send(b"hello")
    time.sleep(0.1)
    c.send(b" world" + request("GET", "/healthz"))
    r = c.read_response(what="response to POST /nope")
    expect_error(r, 404, "not_found")
    expect_no_close_header(r)
    expect_healthz(c.read_response(what="response to the following GET /healthz"))


def bad_request_test(name, data, status=400, code="bad_request"):
    @test(name)
    def t(ctx):
        s = ctx.server()
        c = Conn(s.port)
        c.send(data)
        r = c.read_response()
        expect_error(r, status, code)
        expect_close_header(r)
        expect_closed(c)
        still_serving(s.port)
    return t


bad_request_test("malformed: garbage request line -> 400 and close", b"HELLO\r\n\r\n")
bad_request_test("malformed: space before header colon -> 400 and close",
                 b"GET /healthz HTTP/1.1\r\nHost : 127.0.0.1\r\n\r\n")
bad_request_test("malformed: header line without colon -> 400 and close",
                 b"GET /healthz HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n")
bad_request_test("malformed: bare LF ending a header line -> 400 and close",
                 b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\nX-A: b\r\n\r\n")
bad_request_test("malformed: invalid chunk size -> 400 and close",
                 request("POST", "/nope", [("Transfer-Encoding", "chunked")],
                         b"zz\r\nhello\r\n0\r\n\r\n"))
bad_request_test("smuggling: Content-Length with Transfer-Encoding: chunked -> 400 and close",
                 request("POST", "/nope", [("Content-Length", "5"),
                                           ("Transfer-Encoding", "chunked")],
                         b"5\r\nhello\r\n0\r\n\r\n"))
bad_request_test("smuggling: two different Content-Length headers -> 400 and close",
                 request("POST", "/nope", [("Content-Length", "5"), ("Content-Length", "6")],
                         b"hello!"))
bad_request_test("smuggling: Transfer-Encoding: chunked, identity -> 400 and close",
                 request("POST", "/nope", [("Transfer-Encoding", "chunked, identity")],
                         b"5\r\nhello\r\n0\r\n\r\n"))
bad_request_test("smuggling: Transfer-Encoding: gzip (not ending in chunked) -> 400 and close",
                 request("POST", "/nope", [("Transfer-Encoding", "gzip")],
                         b"5\r\nhello\r\n0\r\n\r\n"))
bad_request_test("smuggling: two Transfer-Encoding headers chunked + identity -> 400 and close",
                 request("POST", "/nope", [("Transfer-Encoding", "chunked"),
                                           ("Transfer-Encoding", "identity")],
                         b"5\r\nhello\r\n0\r\n\r\n"))


# ==========================================================================
# header limits

@test("limits: 15 KiB header block -> 200 (one send and 1 KiB pieces)")
def t_head_15k(ctx):
    s = ctx.server()
    data = padded_head(15 * 1024)
    c = Conn(s.port)
    c.send(data)
    r = c.read_response(what="response to a 15 KiB head")
    expect_healthz(r)
    expect_no_close_header(r)
    c2 = Conn(s.port)
    for i in range(0, len(data), 1024):
        c2.send(data[i:i + 1024])
        time.sleep(0.01)
    expect_healthz(c2.read_response(what="response to a 15 KiB head sent in pieces"))


@test("limits: 17 KiB header block -> 431 headers_too_large and close")
def t_head_17k(ctx):
    s = ctx.server()
    c = Conn(s.port)
    c.send(padded_head(17 * 1024))
    r = c.read_response()
    expect_error(r, 431, "headers_too_large")
    expect_close_header(r)
    expect_closed(c)
    still_serving(s.port)


@test("limits: 17 KiB request line -> 431 headers_too_large and close")
def t_line_17k(ctx):
    s = ctx.server()
    total = 17 * 1024
    fixed = len(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = (b"GET /" + b"a" * (total - fixed) + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert len(data) == total
    c = Conn(s.port)
    c.send(data)
    r = c.read_response()
    expect_error(r, 431, "headers_too_large")
    expect_close_header(r)
    expect_closed(c)
    still_serving(s.port)


@test("limits: 200 small headers -> 431 headers_too_large and close")
def t_many_headers(ctx):
    s = ctx.server()
    c = Conn(s.port)
    c.send(request("GET", "/healthz", [("X-H-%03d" % i, "v") for i in range(200)]))
    r = c.read_response()
    expect_error(r, 431, "headers_too_large")
    expect_close_header(r)
    expect_closed(c)
    still_serving(s.port)


# ==========================================================================
# CONNECTION_TIMEOUT (1000 ms in these tests)

TIMEOUT_MS = 1000
T_MIN, T_MAX = 0.5 * TIMEOUT_MS / 1000, 3.0 * TIMEOUT_MS / 1000


def expect_closed_in_window(kind, secs, what):
    expect(kind in ("eof", "reset"), "%s: connection not closed by the server" % what,
           "closed within %.1f s" % T_MAX, "still open after %.1f s" % secs)
    expect(secs >= T_MIN, "%s: closed too early" % what,
           "not before %.1f s" % T_MIN, "closed after %.2f s" % secs)
    expect(secs <= T_MAX, "%s: closed too late" % what,
           "within %.1f s" % T_MAX, "closed after %.2f s" % secs)


@test("timeout: idle keep-alive connection after a request is closed without a response")
def t_idle_after_request(ctx):
    s = ctx.server("--connection-timeout", TIMEOUT_MS)
    c = Conn(s.port)
    c.send(request("GET", "/healthz"))
    expect_healthz(c.read_response())
    kind, secs, data = c.wait_close(T_MAX + 3)
    expect(not data, "idle connection got bytes instead of a silent close", "nothing",
           short(data))
    expect_closed_in_window(kind, secs, "idle keep-alive connection")


@test("timeout: connection that never sends is closed without a response")
def t_idle_silent(ctx):
    s = ctx.server("--connection-timeout", TIMEOUT_MS)
    c = Conn(s.port)
    kind, secs, data = c.wait_close(T_MAX + 3)
    expect(not data, "silent connection got bytes instead of a silent close", "nothing",
           short(data))
    expect_closed_in_window(kind, secs, "silent connection")


@test("timeout: active keep-alive connection outlives CONNECTION_TIMEOUT")
def t_active_not_cut(ctx):
    s = ctx.server("--connection-timeout", TIMEOUT_MS)
    c = Conn(s.port)
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < 2.6:
        c.send(request("GET", "/healthz"))
        r = c.read_response(what="response %d (at %.1f s)" % (i + 1, time.monotonic() - t0))
        expect_healthz(r)
        expect_no_close_header(r)
        i += 1
        time.sleep(0.4)


@test("timeout: slowloris head (1 byte / 200 ms) is cut after CONNECTION_TIMEOUT")
def t_slowloris(ctx):
    s = ctx.server("--connection-timeout", TIMEOUT_MS)
    c = Conn(s.port)
    head = request("GET", "/healthz")[:-2] + b"X-Slow: " + b"a" * 200
    t0 = time.monotonic()
    kind = None
    for b in head:
        if not c.try_send(bytes([b])):
            kind = "reset"
            break
        kind = c.recv_for(0.2)
        if kind != "idle":
            break
        if time.monotonic() - t0 > T_MAX + 3:
            break
    if kind == "data":
        kind, _, _ = c.wait_close(T_MAX + 3 - (time.monotonic() - t0))
    secs = time.monotonic() - t0
    if c.buf:
        r = parse_response(c.buf)
        expect(r is not None, "incomplete response before the close", "a 408 response",
               short(c.buf))
        expect_error(r[0], 408, "request_timeout")
        expect_close_header(r[0])
    expect_closed_in_window(kind if kind != "idle" else "open", secs, "trickling head")
    still_serving(s.port)


@test("timeout: head completed within CONNECTION_TIMEOUT is served")
def t_slow_head_ok(ctx):
    s = ctx.server("--connection-timeout", TIMEOUT_MS)
    c = Conn(s.port)
    data = request("GET", "/healthz", [("User-Agent", "slow-but-in-time")])
    n = len(data) // 4 + 1
    for i in range(0, len(data), n):
        c.send(data[i:i + n])
        time.sleep(0.15)
    expect_healthz(c.read_response())


@test("timeout: a body that stalls past CONNECTION_TIMEOUT is cut")
def t_body_stall(ctx):
    s = ctx.server("--connection-timeout", TIMEOUT_MS)
    # A Content-Length body, then a chunked one that stops in the middle of a chunk.
    for what, headers, body in (
            ("stalled body", [("Content-Length", "100")], b"0123456789"),
            ("stalled chunked body", [("Transfer-Encoding", "chunked")], b"a\r\n01234")):
        c = Conn(s.port)
        c.send(request("POST", "/nope", headers, body))
        kind, secs, data = c.wait_close(T_MAX + 3)
        buf = c.buf
        while buf:
            r = parse_response(buf)
            expect(r is not None, "incomplete response before the close", "a 404 or 408",
                   short(buf))
            expect(r[0].status in (404, 408), "response to a " + what, "404 or 408",
                   r[0].describe())
            buf = r[1]
        expect_closed_in_window(kind, secs, what)
    still_serving(s.port)


# ==========================================================================
# MAX_CONNECTIONS

def max_connections_test(workers):
    @test("max-connections (workers %d): 11th of 10 gets 503 overloaded + Retry-After; "
          "served again later" % workers)
    def t(ctx):
        max_connections_case(ctx, workers)
    return t


def max_connections_case(ctx, workers):
    s = ctx.server("--max-connections", "10", workers=workers)
    time.sleep(0.3)  # the readiness probe's connection is gone by now
    held = []
    for i in range(10):
        c = Conn(s.port)
        c.send(request("GET", "/healthz"))
        try:
            expect_healthz(c.read_response(what="response on connection %d" % (i + 1)))
        except Fail as e:
            raise Fail("connection %d of 10: %s" % (i + 1, e.summary), *e.details)
        held.append(c)
    c11 = Conn(s.port)
    if c11.recv_for(1.0) == "idle":
        c11.try_send(request("GET", "/healthz"))
    r = c11.read_response(what="response on the 11th connection")
    expect_error(r, 503, "overloaded")
    ra = r.hall("Retry-After")
    expect(len(ra) == 1 and ra[0].strip().isdigit(), "503 needs a Retry-After in seconds",
           "Retry-After: N", repr(ra))
    expect_close_header(r)
    expect_closed(c11, what="11th connection")
    for c in held[:3]:
        c.close()
    deadline = time.monotonic() + 3.0
    while True:
        c = Conn(s.port)
        c.send(request("GET", "/healthz"))
        r = c.read_response(what="response after closing 3 connections")
        c.close()
        if r.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    expect_healthz(r)
    m = scrape(s.port)
    v = metric(m, "ringup_connections_rejected_total")
    expect(v >= 1, "ringup_connections_rejected_total after a rejection", ">= 1", v)


max_connections_test(1)
max_connections_test(2)  # the cap is for the whole process, not per worker


# ==========================================================================
# graceful shutdown

@test("shutdown: idle server exits 0 promptly on SIGTERM", graceful=True)
def t_shutdown_idle(ctx):
    s = ctx.server()
    get_ok(s.port)
    s.terminate()
    rc = s.wait_exit(3.0)
    expect(rc is not None, "server still running 3 s after SIGTERM", "exit within 3 s",
           "running")
    expect_eq("exit status after SIGTERM", 0, rc)


@test("shutdown: request in flight at SIGTERM finishes; new connections refused",
      graceful=True)
def t_shutdown_inflight(ctx):
    s = ctx.server("--shutdown-timeout", "10000")
    a = Conn(s.port)
    full = request("GET", "/healthz")
    a.send(full[:-2])  # the head without its final CRLF
    time.sleep(0.3)
    s.terminate()
    time.sleep(0.5)
    expect(s.alive(), "server exited with a request in flight",
           "running until the request completes", "exit %s" % describe_rc(s.proc.poll()))
    b = None
    try:
        b = Conn(s.port, timeout=1.0)
        b.try_send(request("GET", "/healthz"))
    except OSError:
        b = None  # refused: fine
    a.send(full[-2:])
    r = a.read_response(what="response to the request in flight")
    expect_healthz(r)
    expect_close_header(r)
    expect_closed(a, what="in-flight connection after its response")
    rc = s.wait_exit(5.0)
    expect(rc is not None, "server still running 5 s after the last request finished",
           "exit 0", "running")
    expect_eq("exit status after SIGTERM", 0, rc)
    if b is not None:
        kind, _, data = b.wait_close(2.0)
        expect(not data, "a connection made after SIGTERM got a response",
               "refused or closed without a response", short(data))
        expect(kind in ("eof", "reset"), "connection made after SIGTERM still open",
               "closed", kind)


@test("shutdown: SHUTDOWN_TIMEOUT=1000 bounds a never-finishing request; exit 0",
      graceful=True)
def t_shutdown_timeout(ctx):
    s = ctx.server("--shutdown-timeout", "1000")
    a = Conn(s.port)
    a.send(request("GET", "/healthz")[:-2])
    time.sleep(0.3)
    t0 = time.monotonic()
    s.terminate()
    rc = s.wait_exit(3.0)
    secs = time.monotonic() - t0
    expect(rc is not None, "server still running 3 s after SIGTERM (SHUTDOWN_TIMEOUT=1000)",
           "exit within ~3 s", "running")
    expect_eq("exit status after SIGTERM", 0, rc)
    kind, _, _ = a.wait_close(1.0)
    expect(kind in ("eof", "reset"), "the unfinished connection is still open after exit",
           "closed", kind)
    ctx.note("exited %.2f s after SIGTERM" % secs)


@test("shutdown: idle keep-alive connection is closed at SIGTERM", graceful=True)
def t_shutdown_keepalive(ctx):
    s = ctx.server()  # default SHUTDOWN_TIMEOUT and CONNECTION_TIMEOUT (30 s)
    c = Conn(s.port)
    c.send(request("GET", "/healthz"))
    expect_healthz(c.read_response())
    s.terminate()
    kind, secs, data = c.wait_close(3.0)
    expect(not data, "idle connection got bytes at SIGTERM", "nothing", short(data))
    expect(kind in ("eof", "reset"), "idle keep-alive connection not closed at SIGTERM",
           "closed within 3 s", "still open")
    rc = s.wait_exit(5.0)
    expect(rc is not None, "server still running 5 s after SIGTERM", "exit 0", "running")
    expect_eq("exit status after SIGTERM", 0, rc)


@test("shutdown: SIGINT with no traffic exits 0 like SIGTERM", graceful=True)
def t_shutdown_sigint(ctx):
    s = ctx.server()
    get_ok(s.port)
    s.terminate(signal.SIGINT)
    rc = s.wait_exit(3.0)
    expect(rc is not None, "server still running 3 s after SIGINT", "exit within 3 s",
           "running")
    expect_eq("exit status after SIGINT", 0, rc)


@test("shutdown: a second SIGTERM exits at once despite a request in flight",
      graceful=True)
def t_shutdown_second_signal(ctx):
    s = ctx.server("--shutdown-timeout", "30000")
    a = Conn(s.port)
    a.send(request("GET", "/healthz")[:-2])
    time.sleep(0.3)
    s.terminate()
    time.sleep(0.3)
    expect(s.alive(), "server exited at the first SIGTERM with a request in flight",
           "running", "exit %s" % describe_rc(s.proc.poll()))
    s.proc.send_signal(signal.SIGTERM)
    rc = s.wait_exit(2.0)
    expect(rc is not None, "server still running 2 s after a second SIGTERM",
           "exit at once", "running")
    ctx.note("exit status after the second SIGTERM: %s" % describe_rc(rc))
    s.finish()  # any exit status will do here


# ==========================================================================
# metrics

REQUIRED_FAMILIES = [
    ("ringup_connections_open", "gauge"),
    ("ringup_connections_accepted_total", "counter"),
    ("ringup_connections_rejected_total", "counter"),
    ("ringup_connections_timed_out_total", "counter"),
    ("ringup_requests_total", "counter"),
    ("ringup_request_duration_seconds", "histogram"),
    ("ringup_workers", "gauge"),
]


@test("metrics: text format, HELP/TYPE, required families, histogram shape")
def t_metrics_format(ctx):
    s = ctx.server()
    get_ok(s.port)
    m = scrape(s.port)
    problems = []
    for name, typ in REQUIRED_FAMILIES:
        t = m.types.get(name)
        if t is None and name.endswith("_total"):
            t = m.types.get(name[:-6])
        if t != typ:
            problems.append("%s: TYPE expected %s, got %r" % (name, typ, t))
        sample = name + "_count" if typ == "histogram" else name
        if m.value(sample) is None:
            problems.append("%s: no sample" % sample)
    problems += m.histogram_errors("ringup_request_duration_seconds")
    for n, labels, v in m.samples:
        if n.startswith("ringup_requests_total") and "code" not in labels:
            problems.append("ringup_requests_total sample without code label: %r" % labels)
        if n.endswith("_total") and v < 0:
            problems.append("negative counter %s %r = %s" % (n, labels, v))
    if not m.find("ringup_requests_total", code="200"):
        problems.append('no ringup_requests_total{code="200"} after a 200 response')
    expect(not problems, "metrics problems (%d)" % len(problems), None, None, *problems)
    expect_eq("ringup_workers with --workers 2", 2, m.value("ringup_workers"))


@test("metrics: requests, duration histogram and accepted counters move")
def t_metrics_move(ctx):
    s = ctx.server()
    m1 = scrape(s.port)
    r200 = m1.value("ringup_requests_total", code="200") or 0
    r404 = m1.value("ringup_requests_total", code="404") or 0
    cnt = metric(m1, "ringup_request_duration_seconds_count")
    acc = metric(m1, "ringup_connections_accepted_total")
    for _ in range(5):
        get_ok(s.port)
    for _ in range(2):
        expect_error(http_get(s.port, "/nope"), 404, "not_found")

    def check(m):
        d200 = (m.value("ringup_requests_total", code="200") or 0) - r200
        d404 = (m.value("ringup_requests_total", code="404") or 0) - r404
        dcnt = (m.value("ringup_request_duration_seconds_count") or 0) - cnt
        dacc = (m.value("ringup_connections_accepted_total") or 0) - acc
        if d200 >= 5 and d404 >= 2 and dcnt >= 7 and dacc >= 8:
            return None
        return Fail("counters did not move as expected",
                    "expected: requests_total{code=200} +>=5, {code=404} +2, "
                    "duration_count +>=7, accepted_total +>=8",
                    "got:      +%s, +%s, +%s, +%s" % (d200, d404, dcnt, dacc))
    m2, n = poll_metrics(s.port, check)
    d404 = m2.value("ringup_requests_total", code="404") - r404
    expect_eq("requests_total{code=404} increase", 2, d404)
    d200 = m2.value("ringup_requests_total", code="200") - r200
    expect(d200 <= 5 + n + 1, "requests_total{code=200} increased too much",
           "<= %d" % (5 + n + 1), d200)
    expect(not m2.histogram_errors("ringup_request_duration_seconds"), "histogram shape",
           "consistent", m2.histogram_errors("ringup_request_duration_seconds"))


@test("metrics: ringup_connections_open follows open connections")
def t_metrics_open(ctx):
    s = ctx.server()
    time.sleep(0.2)
    held = []
    for _ in range(3):
        c = Conn(s.port)
        c.send(request("GET", "/healthz"))
        expect_healthz(c.read_response())
        held.append(c)

    def want(n):
        def check(m):
            v = m.value("ringup_connections_open")
            return None if v == n else Fail("ringup_connections_open", "expected: %d" % n,
                                            "got:      %r" % v)
        return check
    poll_metrics(s.port, want(4))  # 3 held + the scraping connection
    for c in held:
        c.close()
    poll_metrics(s.port, want(1))


@test("metrics: ringup_connections_timed_out_total counts CONNECTION_TIMEOUT closes")
def t_metrics_timed_out(ctx):
    s = ctx.server("--connection-timeout", TIMEOUT_MS)
    before = metric(scrape(s.port), "ringup_connections_timed_out_total")
    a = Conn(s.port)  # never sends
    b = Conn(s.port)  # sends half a head
    b.send(request("GET", "/healthz")[:-2])
    for c, what in ((a, "silent connection"), (b, "unfinished head")):
        kind, secs, _ = c.wait_close(T_MAX + 3)
        expect(kind in ("eof", "reset"), "%s not closed by CONNECTION_TIMEOUT" % what,
               "closed", "open after %.1f s" % secs)

    def check(m):
        d = (m.value("ringup_connections_timed_out_total") or 0) - before
        return None if d >= 2 else Fail("ringup_connections_timed_out_total increase",
                                        "expected: >= 2", "got:      %s" % d)
    poll_metrics(s.port, check)


@test("metrics: ringup_workers equals --workers")
def t_metrics_workers(ctx):
    for n in (2, 1):
        s = ctx.server(workers=n)
        expect_eq("ringup_workers with --workers %d" % n, n,
                  metric(scrape(s.port), "ringup_workers"))
        rc = s.stop()
        expect_eq("exit status after SIGTERM", 0, rc)


# ==========================================================================
# logs

@test("logs: JSON lines by default, one access line per request")
def t_logs_json(ctx):
    s = ctx.server(unset=("LOG_FORMAT", "LOG_LEVEL"))
    for _ in range(3):
        get_ok(s.port)
    expect_error(http_get(s.port, "/nope"), 404, "not_found")
    deadline = time.monotonic() + 3.0
    while True:
        acc = access_lines(s)
        hz = [a for a in acc if a.get("path") == "/healthz"]
        nope = [a for a in acc if a.get("path") == "/nope"]
        if (len(hz) >= 3 and nope) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    bad = []
    for line in s.stderr_lines():
        try:
            doc = json.loads(line)
            if not isinstance(doc, dict) or "level" not in doc or "msg" not in doc:
                bad.append(line)
        except ValueError:
            bad.append(line)
    expect(not bad, "stderr lines that are not JSON objects with level and msg",
           "JSON lines", None, *[short(b, 200) for b in bad[:5]])
    expect_eq("access lines for GET /healthz", 3, len(hz))
    expect_eq("access lines for GET /nope", 1, len(nope))
    for a, status in [(hz[0], 200), (nope[0], 404)]:
        for k in ("level", "msg", "method", "path", "status", "dur_us"):
            expect(k in a, "access line lacks %r" % k, k, json.dumps(a))
        expect_eq("access line method", "GET", a["method"])
        expect(a["status"] == status and type(a["status"]) is int, "access line status",
               "%d (a JSON integer)" % status, repr(a["status"]))
        expect(type(a["dur_us"]) is int and a["dur_us"] >= 0, "access line dur_us",
               "a non-negative JSON integer", repr(a["dur_us"]))


@test("logs: LOG_FORMAT=text lines are not JSON")
def t_logs_text(ctx):
    s = ctx.server(env={"LOG_FORMAT": "text"}, unset=("LOG_LEVEL",))
    get_ok(s.port)
    deadline = time.monotonic() + 3.0
    while not any("/healthz" in l for l in s.stderr_lines()) and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = s.stderr_lines()
    expect(any("/healthz" in l for l in lines), "no access line mentioning /healthz",
           "a text access line", short("\n".join(lines[-5:]), 500))
    js = []
    for l in lines:
        try:
            if isinstance(json.loads(l), dict):
                js.append(l)
        except ValueError:
            pass
    expect(not js, "JSON lines with LOG_FORMAT=text", "none", None,
           *[short(x, 200) for x in js[:5]])


# ==========================================================================
# load

@test("load: 500 concurrent connections each get 200 for GET /healthz")
def t_many_connections(ctx):
    s = ctx.server()
    n = 500
    req = request("GET", "/healthz")
    sel = selectors.DefaultSelector()
    state = {}
    socks = []
    try:
        for _ in range(n):
            so = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            so.setblocking(False)
            socks.append(so)
            so.connect_ex((HOST, s.port))
            state[so] = {"out": req, "in": b"", "resp": None, "err": None}
            sel.register(so, selectors.EVENT_WRITE)
        pending = n
        deadline = time.monotonic() + 30.0
        while pending and time.monotonic() < deadline:
            for key, ev in sel.select(timeout=0.5):
                so = key.fileobj
                st = state[so]
                try:
                    if ev & selectors.EVENT_WRITE:
                        err = so.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            raise OSError(err, os.strerror(err))
                        sent = so.send(st["out"])
                        st["out"] = st["out"][sent:]
                        if not st["out"]:
                            sel.modify(so, selectors.EVENT_READ)
                    else:
                        d = so.recv(65536)
                        if not d:
                            raise OSError("closed by server after %s" % short(st["in"], 100))
                        st["in"] += d
                        r = parse_response(st["in"])
                        if r is None:
                            continue
                        st["resp"] = r[0]
                        sel.unregister(so)
                        pending -= 1
                except (OSError, Fail) as e:
                    st["err"] = str(e)
                    sel.unregister(so)
                    pending -= 1
        errs = [st["err"] for st in state.values() if st["err"]]
        unanswered = [1 for st in state.values() if not st["err"] and st["resp"] is None]
        bad = [st["resp"] for st in state.values() if st["resp"] is not None
               and (st["resp"].status != 200 or st["resp"].body != b'{"status":"ok"}')]
        expect(not errs and not unanswered and not bad,
               "not every connection got 200 {\"status\":\"ok\"}",
               "%d x 200" % n, "%d errors, %d unanswered after 30 s, %d bad responses"
               % (len(errs), len(unanswered), len(bad)),
               *(["first error: %s" % errs[0]] if errs else [])
               + (["first bad: %s" % bad[0].describe()] if bad else []))
        for st in list(state.values())[:20]:
            check_basics(st["resp"])
        m = scrape(s.port)
        v = metric(m, "ringup_connections_open")
        expect(v >= n + 1, "ringup_connections_open with %d connections held" % n,
               ">= %d" % (n + 1), v)
    finally:
        sel.close()
        for so in socks:
            so.close()


# ==========================================================================
# migrate and token commands against PostgreSQL: tests/it/db_cli.py

import db_cli  # noqa: E402

db_cli.register(test)

# /v1 metadata routes, auth and the database slices: tests/it/db_routes.py
import db_routes  # noqa: E402

db_routes.register(test)
import uploads  # noqa: E402
uploads.register(test)
import limits_io  # noqa: E402
limits_io.register(test)
import load  # noqa: E402
load.register(test)
# strict HTTP edges (obs-fold, transfer codings, names, 204, 100 Continue): tests/it/strict.py
import strict  # noqa: E402
strict.register(test)
# token lookups under a flood of unknown tokens: tests/it/auth_flood.py
import auth_flood  # noqa: E402
auth_flood.register(test)
# row inserts with lost answers, forms all or none, directory syncs: tests/it/durability.py
import durability  # noqa: E402
durability.register(test)
# the Redis slices: caps, outages, fast and slow reconnects: tests/it/redis.py
import redis  # noqa: E402
redis.register(test)
# upload rate limits shared through Redis, and their local fallback: tests/it/ratelimit.py
import ratelimit  # noqa: E402
ratelimit.register(test)
# progress, metadata cache and events through Redis: tests/it/notify.py
import notify  # noqa: E402
notify.register(test)


# ==========================================================================
# runner

def _alarm(signum, frame):
    raise Fail("test exceeded %d s (safety limit)" % TEST_LIMIT_S)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True, help="path to the ringup binary")
    ap.add_argument("-k", dest="pattern", default=None, help="run tests whose name contains this")
    opts = ap.parse_args()
    binary = os.path.abspath(opts.bin)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print("Bail out! no executable at %s" % binary, flush=True)
        return 1
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass
    signal.signal(signal.SIGALRM, _alarm)
    selected = [t for t in TESTS if opts.pattern is None or opts.pattern in t[0]]
    print("1..%d" % len(selected), flush=True)
    ctx = Ctx(binary)
    failed = 0
    grace = 10.0
    t_suite = time.monotonic()
    for num, (name, fn, graceful) in enumerate(selected, 1):
        scope = new_scope()
        err = None
        t0 = time.monotonic()
        signal.alarm(TEST_LIMIT_S)
        try:
            fn(ctx)
        except Fail as e:
            err = e
        except Exception as e:  # a socket error or a bug: report, keep going
            tb = traceback.extract_tb(e.__traceback__)
            where = ["at %s:%d in %s" % (os.path.basename(f.filename), f.lineno, f.name)
                     for f in tb[-3:]]
            err = Fail("unexpected %s: %s" % (type(e).__name__, e), *where)
        finally:
            signal.alarm(0)
        # cleanup: client sockets first, then servers
        scope.close_conns()
        for srv in scope.servers:
            if srv.stopped:
                continue
            crashed = srv.sigterm_at is None and srv.proc.poll() is not None
            rc = srv.stop(10.0 if graceful else grace)
            if crashed:
                if err is None:
                    err = Fail("server exited during the test with status %s" % describe_rc(rc))
                else:
                    err.details.append("server had exited during the test with status %s"
                                       % describe_rc(rc))
            elif srv.killed:
                msg = "server needed SIGKILL: still running %.0f s after SIGTERM" % (
                    10.0 if graceful else grace)
                if graceful and err is None:
                    err = Fail(msg)
                else:
                    scope.notes.append(msg)
                grace = 2.0  # don't spend 10 s on every later test
            elif rc != 0:
                msg = "server exit status after SIGTERM: %s (expected 0)" % describe_rc(rc)
                if graceful and err is None:
                    err = Fail(msg)
                else:
                    scope.notes.append(msg)
        secs = time.monotonic() - t0
        if err is None:
            print("ok %d - %s" % (num, name), flush=True)
        else:
            failed += 1
            print("not ok %d - %s" % (num, name))
            print("# %s" % err.summary)
            for d in err.details:
                for line in str(d).splitlines() or [""]:
                    print("#   %s" % line)
            for srv in scope.servers:
                tail = srv.stderr_tail(15)
                print("#   server %s exit %s; last stderr lines (%d):"
                      % (" ".join(srv.cmd[1:]), describe_rc(srv.proc.returncode), len(tail)))
                for line in tail:
                    print("#     %s" % short(line, 400)[1:-1])
            sys.stdout.flush()
        for n in scope.notes:
            print("# note: %s" % n)
        if secs > 15:
            print("# note: took %.1f s" % secs)
        sys.stdout.flush()
        scope.remove_dirs()
    print("# %d of %d tests failed (%.1f s)" % (failed, len(selected),
                                                time.monotonic() - t_suite), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
